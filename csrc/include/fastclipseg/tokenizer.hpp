// fastclipseg::ClipTokenizer: CLIP's byte-level BPE tokenizer, read from a model folder's
// tokenizer.json, giving the same token ids as transformers' CLIPTokenizer (the
// tokenizers-backed one) called with truncation=True, max_length=max_length().
//
// The pipeline is the one a CLIP tokenizer.json describes: added tokens (<|startoftext|>,
// <|endoftext|>) found in the raw text, the normalizer (NFC, every run of whitespace to one
// space, lower case), CLIP's pre-tokenizer pattern, GPT-2's byte-to-unicode mapping, BPE with
// the "</w>" end-of-word suffix, and BOS + ids + EOS around the result.
//
// Errors: every function throws fastclipseg::Error (error.hpp) with a message naming what was
// wrong: a missing or unreadable file (with its path), malformed JSON, a tokenizer.json that is
// not a CLIP BPE one (saying what was found), text that is not valid UTF-8 (with the byte
// offset), max_length < 2.
//
// Thread safety: a ClipTokenizer is immutable once loaded and keeps no cache; any number of
// threads may call its const functions at once. Copies are cheap and share the loaded data.
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "fastclipseg/api.hpp"
#include "fastclipseg/error.hpp"

namespace fastclipseg {

class FASTCLIPSEG_API ClipTokenizer {
public:
    // Reads a tokenizer.json file. max_length counts BOS and EOS, as transformers' does.
    static ClipTokenizer from_file(const std::string& tokenizer_json_path, int max_length = 77);
    // Reads folder/tokenizer.json.
    static ClipTokenizer from_folder(const std::string& folder, int max_length = 77);

    // BOS + the text's token ids + EOS; when that would exceed max_length(), the text's ids are
    // cut at the end so that the total is max_length() (BOS and EOS are always kept).
    std::vector<std::int64_t> encode(const std::string& utf8_text) const;

    // The normalizer's output (UTF-8): NFC, every run of whitespace to one space, lower case;
    // added tokens that the file marks as not normalized (<|endoftext|> in CLIP) are kept as
    // they are, and the text between them is normalized piece by piece, as encode() does.
    // Texts with equal normalize() results get equal encode() ids, except where one of them
    // holds an added token's text in a form that only matches it after normalization
    // (say "<|ENDOFTEXT|>"): the literal token is one id, the other form is ordinary text.
    std::string normalize(const std::string& utf8_text) const;

    int max_length() const;
    std::int64_t bos_id() const;
    std::int64_t eos_id() const;
    std::int64_t pad_id() const;

private:
    struct Impl;
    explicit ClipTokenizer(std::shared_ptr<const Impl> impl);
    std::shared_ptr<const Impl> impl_;
};

}  // namespace fastclipseg
