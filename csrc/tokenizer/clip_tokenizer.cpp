// CLIP's tokenizer.json pipeline, step by step as the tokenizers library (Rust) runs it, so that
// the ids equal transformers' CLIPTokenizer; see fastclipseg/tokenizer.hpp.
//
// Unicode data come from ICU: a well-kept Unicode database that Debian (and every other
// distribution) ships, with the properties the tokenizers library's normalizers and regexes
// use: NFC, White_Space, general categories and lower-case mappings. Compared with tokenizers
// 0.23 (every code point alone, and NFC on sequences), ICU 72 (Unicode 15.0) agrees on every
// character assigned by Unicode 15.0, with NFC held to Unicode 9.0 as tokenizers' is
// (Unicode9Nfc). Characters assigned later are unassigned to ICU 72, while tokenizers' regexes
// and lower-casing know some of them; a newer ICU closes that gap.
#include "fastclipseg/tokenizer.hpp"

#include <unicode/normalizer2.h>
#include <unicode/uchar.h>
#include <unicode/uniset.h>
#include <unicode/unistr.h>
#include <unicode/ustring.h>
#include <unicode/utf16.h>
#include <unicode/utf8.h>

#include <algorithm>
#include <array>
#include <cerrno>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <initializer_list>
#include <limits>
#include <nlohmann/json.hpp>
#include <optional>
#include <queue>
#include <sstream>
#include <string_view>
#include <unordered_map>
#include <utility>

namespace fastclipseg {
namespace {

using Json = nlohmann::json;

// ---------------------------------------------------------------------------------------------
// UTF-8
// ---------------------------------------------------------------------------------------------

[[noreturn]] void throw_invalid_utf8(const std::string& text, std::size_t offset) {
    std::ostringstream message;
    message << "text is not valid UTF-8: ill-formed byte sequence at byte offset " << offset
            << " (byte 0x" << std::hex << std::uppercase << int(static_cast<unsigned char>(text[offset]))
            << ")";
    throw Error(message.str());
}

// Strict decoding (well-formed UTF-8 only, as the Rust strings the tokenizers library works on):
// ICU's U8_NEXT gives a negative code point for an ill-formed sequence, overlong forms and
// surrogates included.
std::u32string decode_utf8(const std::string& text) {
    if (text.size() > static_cast<std::size_t>(std::numeric_limits<int32_t>::max())) {
        throw Error("text of " + std::to_string(text.size()) + " bytes is too long to tokenize");
    }
    std::u32string code_points;
    code_points.reserve(text.size());
    const auto* bytes = reinterpret_cast<const uint8_t*>(text.data());
    const auto length = static_cast<int32_t>(text.size());
    for (int32_t i = 0; i < length;) {
        const int32_t start = i;
        UChar32 c;
        U8_NEXT(bytes, i, length, c);
        if (c < 0) throw_invalid_utf8(text, static_cast<std::size_t>(start));
        code_points.push_back(static_cast<char32_t>(c));
    }
    return code_points;
}

void append_utf8(char32_t c, std::string& out) {
    uint8_t bytes[U8_MAX_LENGTH];
    int32_t length = 0;
    U8_APPEND_UNSAFE(bytes, length, c);  // c comes from decode_utf8 or ICU: a valid code point
    out.append(reinterpret_cast<const char*>(bytes), static_cast<std::size_t>(length));
}

std::string encode_utf8(std::u32string_view text) {
    std::string out;
    out.reserve(text.size());
    for (char32_t c : text) append_utf8(c, out);
    return out;
}

// ---------------------------------------------------------------------------------------------
// Unicode properties and the normalizer: Sequence[NFC, Replace(\s+ -> " "), Lowercase]
// ---------------------------------------------------------------------------------------------

// Oniguruma's \s (in the tokenizers library's regexes) is exactly the White_Space property.
bool is_whitespace(char32_t c) { return u_isUWhiteSpace(static_cast<UChar32>(c)) != 0; }
bool is_letter(char32_t c) { return (U_GET_GC_MASK(static_cast<UChar32>(c)) & U_GC_L_MASK) != 0; }
bool is_number(char32_t c) { return (U_GET_GC_MASK(static_cast<UChar32>(c)) & U_GC_N_MASK) != 0; }

[[noreturn]] void throw_icu_failure(const char* what, UErrorCode status) {
    throw Error(std::string("ICU ") + what + " failed: " + u_errorName(status));
}

// NFC as the tokenizers library does it: its unicode-normalization-alignments crate has the
// tables of Unicode 9.0. ICU's NFC restricted to the characters assigned by Unicode 9.0 is the
// same normalization (Unicode's normalization stability policy keeps old characters' data), and
// it leaves later characters alone as the crate does, which does not know them.
class Unicode9Nfc {
public:
    static const Unicode9Nfc& instance() {
        static const Unicode9Nfc nfc;
        return nfc;
    }

    std::u32string normalize(std::u32string_view text) const {
        if (text.size() > static_cast<std::size_t>(std::numeric_limits<int32_t>::max() / 2)) {
            throw Error("text of " + std::to_string(text.size()) + " characters is too long to normalize");
        }
        icu::UnicodeString utf16;
        for (char32_t c : text) utf16.append(static_cast<UChar32>(c));
        UErrorCode status = U_ZERO_ERROR;
        icu::UnicodeString composed;
        nfc_.normalize(utf16, composed, status);
        if (U_FAILURE(status)) throw_icu_failure("NFC normalization", status);
        std::u32string out;
        out.reserve(static_cast<std::size_t>(composed.length()));
        for (int32_t i = 0; i < composed.length();) {
            const UChar32 c = composed.char32At(i);
            out.push_back(static_cast<char32_t>(c));
            i += U16_LENGTH(c);
        }
        return out;
    }

private:
    Unicode9Nfc() : unicode_9_characters_(characters_assigned_by("9.0")), nfc_(full_nfc(), unicode_9_characters_) {}

    static icu::UnicodeSet characters_assigned_by(const char* version) {
        UErrorCode status = U_ZERO_ERROR;
        icu::UnicodeSet characters(icu::UnicodeString("[:age=") + version + ":]", status);
        if (U_FAILURE(status)) throw_icu_failure("character age lookup", status);
        characters.freeze();  // frozen sets are safe to share between threads
        return characters;
    }

    static const icu::Normalizer2& full_nfc() {
        UErrorCode status = U_ZERO_ERROR;
        const icu::Normalizer2* nfc = icu::Normalizer2::getNFCInstance(status);
        if (U_FAILURE(status)) throw_icu_failure("NFC data loading", status);
        return *nfc;
    }

    const icu::UnicodeSet unicode_9_characters_;  // before nfc_, which refers to it
    const icu::FilteredNormalizer2 nfc_;
};

// Lower-cases one character on its own, as Rust's char::to_lowercase (which tokenizers calls per
// character): full mappings (U+0130 -> "i\u0307") and no context, so a capital sigma is always
// σ, never the final ς. ICU's root-locale lower-casing of the lone character gives just that.
void append_lowercase(char32_t c, std::u32string& out) {
    if (c < 0x80) {
        out.push_back(c >= U'A' && c <= U'Z' ? c + (U'a' - U'A') : c);
        return;
    }
    UChar source[2];
    int32_t source_length = 0;
    U16_APPEND_UNSAFE(source, source_length, static_cast<UChar32>(c));
    UChar lower[8];  // the longest full lower-case mapping is 3 UTF-16 units
    UErrorCode status = U_ZERO_ERROR;
    const int32_t lower_length = u_strToLower(lower, 8, source, source_length, "", &status);
    if (U_FAILURE(status)) throw_icu_failure("lower-casing", status);
    for (int32_t i = 0; i < lower_length;) {
        UChar32 lowered;
        U16_NEXT(lower, i, lower_length, lowered);
        out.push_back(static_cast<char32_t>(lowered));
    }
}

// Replace and Lowercase in one pass: whitespace lower-cases to itself and nothing else
// lower-cases to whitespace, so doing both per character equals doing them one after the other.
std::u32string normalize_text(std::u32string_view text) {
    const std::u32string composed = Unicode9Nfc::instance().normalize(text);
    std::u32string out;
    out.reserve(composed.size());
    for (std::size_t i = 0; i < composed.size();) {
        if (!is_whitespace(composed[i])) {
            append_lowercase(composed[i++], out);
            continue;
        }
        out.push_back(U' ');
        while (i < composed.size() && is_whitespace(composed[i])) ++i;
    }
    return out;
}

// ---------------------------------------------------------------------------------------------
// Added tokens (<|startoftext|>, <|endoftext|>): found before the normalizer runs, or after it
// for tokens the file marks "normalized"; the text between them is tokenized piece by piece.
// ---------------------------------------------------------------------------------------------

struct AddedToken {
    std::u32string content;
    std::int64_t id;
};

// A stretch of text between added tokens, or one added token (token_id set).
struct Segment {
    std::u32string text;
    std::optional<std::int64_t> token_id;
};

bool matches_at(std::u32string_view text, std::size_t pos, std::u32string_view word) {
    return !word.empty() && text.substr(pos, word.size()) == word;
}

// Leftmost-longest matching, as the tokenizers library's Aho-Corasick search; tokens is sorted
// longest first.
const AddedToken* added_token_at(std::u32string_view text, std::size_t pos, const std::vector<AddedToken>& tokens) {
    for (const AddedToken& token : tokens) {
        if (matches_at(text, pos, token.content)) return &token;
    }
    return nullptr;
}

std::vector<Segment> split_on_added_tokens(std::u32string_view text, const std::vector<AddedToken>& tokens) {
    std::vector<Segment> segments;
    std::size_t text_start = 0;
    for (std::size_t pos = 0; pos < text.size();) {
        const AddedToken* token = added_token_at(text, pos, tokens);
        if (!token) {
            ++pos;
            continue;
        }
        if (pos > text_start) segments.push_back({std::u32string(text.substr(text_start, pos - text_start)), {}});
        segments.push_back({token->content, token->id});
        pos += token->content.size();
        text_start = pos;
    }
    if (text_start < text.size()) segments.push_back({std::u32string(text.substr(text_start)), {}});
    return segments;
}

// ---------------------------------------------------------------------------------------------
// Pre-tokenizer: CLIP's Split pattern, then ByteLevel (GPT-2's pattern and byte-to-unicode map)
// ---------------------------------------------------------------------------------------------

// The only Split pattern accepted; split_clip_words() scans for exactly this.
constexpr const char* kClipSplitPattern =
    R"(<\|startoftext\|>|<\|endoftext\|>|'s|'t|'re|'ve|'m|'ll|'d|[\p{L}]+|[\p{N}]|[^\s\p{L}\p{N}]+)";

enum class CharClass { whitespace, letter, number, other };

CharClass classify(char32_t c) {
    if (is_whitespace(c)) return CharClass::whitespace;
    if (is_letter(c)) return CharClass::letter;
    if (is_number(c)) return CharClass::number;
    return CharClass::other;
}

// Length of 's 't 're 've 'm 'll 'd at pos, or 0.
std::size_t contraction_length(std::u32string_view text, std::size_t pos) {
    for (std::u32string_view contraction : {U"'s", U"'t", U"'re", U"'ve", U"'m", U"'ll", U"'d"}) {
        if (matches_at(text, pos, contraction)) return contraction.size();
    }
    return 0;
}

std::size_t class_run_length(std::u32string_view text, std::size_t pos, CharClass char_class) {
    std::size_t end = pos;
    while (end < text.size() && classify(text[end]) == char_class) ++end;
    return end - pos;
}

using Range = std::pair<std::size_t, std::size_t>;  // [begin, end) in code points

// Split(kClipSplitPattern, behavior Removed, invert): the matches are the words and what lies
// between them (whitespace, which no alternative starts with) is dropped. At each position the
// alternatives are tried in the pattern's order, as Oniguruma does.
std::vector<Range> split_clip_words(std::u32string_view text) {
    std::vector<Range> words;
    for (std::size_t pos = 0; pos < text.size();) {
        const CharClass char_class = classify(text[pos]);
        if (char_class == CharClass::whitespace) {
            ++pos;
            continue;
        }
        std::size_t length = 0;
        for (std::u32string_view literal : {U"<|startoftext|>", U"<|endoftext|>"}) {
            if (length == 0 && matches_at(text, pos, literal)) length = literal.size();
        }
        if (length == 0) length = contraction_length(text, pos);
        if (length == 0) length = char_class == CharClass::number ? 1 : class_run_length(text, pos, char_class);
        words.emplace_back(pos, pos + length);
        pos += length;
    }
    return words;
}

// ByteLevel's GPT-2 pattern ('s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+)
// inside one word. Words hold no whitespace, so what is left of it is the contractions and runs
// of one class; in effect it splits only the literals "<|startoftext|>" and "<|endoftext|>" (into
// "<|", letters, "|>").
void split_byte_level_words(std::u32string_view text, Range word, std::vector<Range>& out) {
    const std::u32string_view word_text = text.substr(word.first, word.second - word.first);
    for (std::size_t pos = 0; pos < word_text.size();) {
        std::size_t length = contraction_length(word_text, pos);
        if (length == 0) length = class_run_length(word_text, pos, classify(word_text[pos]));
        out.emplace_back(word.first + pos, word.first + pos + length);
        pos += length;
    }
}

// GPT-2's bytes_to_unicode: printable bytes stand for themselves, the others for U+0100 + n.
const std::array<std::string, 256>& byte_level_alphabet() {
    static const std::array<std::string, 256> alphabet = [] {
        std::array<std::string, 256> symbols;
        char32_t next_unprintable = 0x100;
        for (int byte = 0; byte < 256; ++byte) {
            const bool printable = (byte >= 0x21 && byte <= 0x7E) || (byte >= 0xA1 && byte <= 0xAC) || byte >= 0xAE;
            append_utf8(printable ? char32_t(byte) : next_unprintable++, symbols[byte]);
        }
        return symbols;
    }();
    return alphabet;
}

// ---------------------------------------------------------------------------------------------
// Reading and checking tokenizer.json
// ---------------------------------------------------------------------------------------------

std::string read_file(const std::string& path) {
    std::error_code error;
    const auto status = std::filesystem::status(path, error);
    if (status.type() == std::filesystem::file_type::not_found) {
        throw Error("tokenizer file '" + path + "' does not exist");
    }
    if (std::filesystem::is_directory(status)) throw Error("'" + path + "' is a folder, not a tokenizer.json file");
    std::ifstream file(path, std::ios::binary);
    if (!file) throw Error("cannot open tokenizer file '" + path + "': " + std::strerror(errno));
    std::ostringstream contents;
    contents << file.rdbuf();
    if (file.bad()) throw Error("cannot read tokenizer file '" + path + "': " + std::strerror(errno));
    return contents.str();
}

// A value as it appears in the file, shortened for a message.
std::string describe(const Json& value) {
    std::string text = value.dump(-1, ' ', false, Json::error_handler_t::replace);
    constexpr std::size_t kMaxChars = 300;
    if (text.size() > kMaxChars) text = text.substr(0, kMaxChars) + "...";
    return text;
}

[[noreturn]] void throw_not_clip(const std::string& found) {
    throw Error("not a CLIP BPE tokenizer.json: " + found);
}

bool has_value(const Json& object, const char* key, const Json& value) {
    return object.is_object() && object.contains(key) && object.at(key) == value;
}

void check_model_settings(const Json& model) {
    if (!has_value(model, "type", "BPE")) {
        throw_not_clip("its model is of type " + describe(model.is_object() ? model.value("type", Json()) : model) +
                       ", CLIP's is \"BPE\"");
    }
    // Settings CLIP's tokenizer leaves off; absent means off too.
    const std::pair<const char*, std::vector<Json>> defaults[] = {
        {"dropout", {nullptr}},
        {"byte_fallback", {false}},
        {"fuse_unk", {false}},
        {"ignore_merges", {false}},
        {"continuing_subword_prefix", {nullptr, ""}},
    };
    for (const auto& [key, accepted] : defaults) {
        if (model.contains(key) && std::find(accepted.begin(), accepted.end(), model.at(key)) == accepted.end()) {
            throw_not_clip(std::string("its model sets ") + key + " to " + describe(model.at(key)) +
                           ", which CLIP's tokenizer does not use");
        }
    }
}

void check_normalizer(const Json& normalizer) {
    const Json clip_normalizer = Json::parse(R"({"type": "Sequence", "normalizers": [{"type": "NFC"},
        {"type": "Replace", "pattern": {"Regex": "\\s+"}, "content": " "}, {"type": "Lowercase"}]})");
    if (normalizer != clip_normalizer) {
        throw_not_clip("its normalizer is " + describe(normalizer) + ", CLIP's is " + clip_normalizer.dump());
    }
}

bool is_clip_split(const Json& pre_tokenizer) {
    return has_value(pre_tokenizer, "type", "Split") &&
           has_value(pre_tokenizer, "pattern", Json{{"Regex", kClipSplitPattern}}) &&
           has_value(pre_tokenizer, "behavior", "Removed") && has_value(pre_tokenizer, "invert", true);
}

bool is_clip_byte_level(const Json& pre_tokenizer) {
    return has_value(pre_tokenizer, "type", "ByteLevel") && has_value(pre_tokenizer, "add_prefix_space", false) &&
           (!pre_tokenizer.contains("use_regex") || has_value(pre_tokenizer, "use_regex", true));
}

void check_pre_tokenizer(const Json& pre_tokenizer) {
    const Json* steps = has_value(pre_tokenizer, "type", "Sequence") ? &pre_tokenizer.at("pretokenizers") : nullptr;
    if (!steps || !steps->is_array() || steps->size() != 2 || !is_clip_split((*steps)[0]) ||
        !is_clip_byte_level((*steps)[1])) {
        throw_not_clip("its pre_tokenizer is " + describe(pre_tokenizer) + ", CLIP's is Sequence[Split(Regex " +
                       kClipSplitPattern +
                       ", behavior Removed, invert true), ByteLevel(add_prefix_space false, use_regex true)]");
    }
}

// RobertaProcessing's "cls" (BOS) or "sep" (EOS): ["<|startoftext|>", 49406].
std::int64_t post_processor_id(const Json& post_processor, const char* key) {
    if (!has_value(post_processor, "type", "RobertaProcessing")) {
        throw_not_clip("its post_processor is " + describe(post_processor) + ", CLIP's is RobertaProcessing");
    }
    return post_processor.at(key).at(1).get<std::int64_t>();
}

// "padding": {"pad_id": ...} where the file sets padding; else EOS, which is CLIP's pad token.
std::int64_t padding_id(const Json& root, std::int64_t eos_id) {
    const auto padding = root.find("padding");
    if (padding == root.end() || !padding->is_object() || !padding->contains("pad_id")) return eos_id;
    return padding->at("pad_id").get<std::int64_t>();
}

bool longer_content(const AddedToken& a, const AddedToken& b) { return a.content.size() > b.content.size(); }

// ---------------------------------------------------------------------------------------------
// BPE model
// ---------------------------------------------------------------------------------------------

struct MergeRule {
    std::uint32_t rank;
    std::uint32_t merged_id;
};

struct Symbol {
    std::uint32_t id;
    std::ptrdiff_t prev;
    std::ptrdiff_t next;
    bool merged_away;
};

// A pair that may be merged: lowest rank first, then leftmost, as in tokenizers' Word::merge_all.
struct MergeCandidate {
    std::uint32_t rank;
    std::size_t pos;
    std::uint32_t merged_id;
    bool operator>(const MergeCandidate& other) const {
        return rank != other.rank ? rank > other.rank : pos > other.pos;
    }
};

std::uint64_t pair_key(std::uint32_t left, std::uint32_t right) { return (std::uint64_t{left} << 32) | right; }

class BpeModel {
public:
    explicit BpeModel(const Json& model) {
        check_model_settings(model);
        read_vocab(model.at("vocab"));
        read_merges(model.at("merges"));
        end_of_word_suffix_ = optional_string(model, "end_of_word_suffix");
        const std::string unk_token = optional_string(model, "unk_token");
        if (!unk_token.empty()) unk_id_ = vocab_id(unk_token, "unk_token");
    }

    // BPE on one word given as byte-level symbols (one string per byte).
    void encode_word(const std::vector<const std::string*>& symbols, std::vector<std::int64_t>& ids) const {
        std::vector<Symbol> word = initial_symbols(symbols);
        apply_merges(word);
        for (const Symbol& symbol : word) {
            if (!symbol.merged_away) ids.push_back(symbol.id);
        }
    }

private:
    static std::string optional_string(const Json& object, const char* key) {
        const auto it = object.find(key);
        return it == object.end() || it->is_null() ? std::string() : it->get<std::string>();
    }

    void read_vocab(const Json& vocab) {
        for (const auto& [token, id_json] : vocab.items()) {
            const auto id = id_json.get<std::int64_t>();
            if (id < 0 || id > std::numeric_limits<std::uint32_t>::max()) {
                throw Error("vocabulary id " + std::to_string(id) + " of '" + token + "' is out of range");
            }
            vocab_.emplace(token, static_cast<std::uint32_t>(id));
        }
    }

    std::uint32_t vocab_id(const std::string& token, const std::string& where) const {
        const auto it = vocab_.find(token);
        if (it == vocab_.end()) throw Error(where + " '" + token + "' is not in the vocabulary");
        return it->second;
    }

    // A merge is "left right" (older files) or ["left", "right"].
    static std::pair<std::string, std::string> merge_pair(const Json& entry, std::size_t rank) {
        if (entry.is_array() && entry.size() == 2) return {entry[0].get<std::string>(), entry[1].get<std::string>()};
        if (entry.is_string()) {
            const auto text = entry.get<std::string>();
            const std::size_t space = text.find(' ');
            if (space != std::string::npos && text.find(' ', space + 1) == std::string::npos) {
                return {text.substr(0, space), text.substr(space + 1)};
            }
        }
        throw Error("merge #" + std::to_string(rank) + " is " + entry.dump() +
                    ", not \"left right\" or [\"left\", \"right\"]");
    }

    void read_merges(const Json& merges) {
        for (std::size_t rank = 0; rank < merges.size(); ++rank) {
            const auto [left, right] = merge_pair(merges[rank], rank);
            const std::string where = "merge #" + std::to_string(rank) + ":";
            const std::uint32_t merged_id = vocab_id(left + right, where);
            // A repeated pair keeps its last rank, as the tokenizers library's map does.
            merges_[pair_key(vocab_id(left, where), vocab_id(right, where))] = {static_cast<std::uint32_t>(rank),
                                                                                merged_id};
        }
    }

    // One symbol per byte, the last one with the end-of-word suffix; a symbol missing from the
    // vocabulary becomes unk (or is dropped when the file names no unk token), as in tokenizers.
    std::vector<Symbol> initial_symbols(const std::vector<const std::string*>& symbols) const {
        std::vector<Symbol> word;
        word.reserve(symbols.size());
        for (std::size_t i = 0; i < symbols.size(); ++i) {
            const bool last = i + 1 == symbols.size();
            const auto it = vocab_.find(last ? *symbols[i] + end_of_word_suffix_ : *symbols[i]);
            std::optional<std::uint32_t> id = it != vocab_.end() ? std::optional(it->second) : unk_id_;
            if (!id) continue;
            const auto index = static_cast<std::ptrdiff_t>(word.size());
            word.push_back({*id, index - 1, -1, false});
            if (index > 0) word[index - 1].next = index;
        }
        return word;
    }

    std::optional<MergeRule> merge_rule(std::uint32_t left, std::uint32_t right) const {
        const auto it = merges_.find(pair_key(left, right));
        return it == merges_.end() ? std::nullopt : std::optional(it->second);
    }

    using CandidateQueue =
        std::priority_queue<MergeCandidate, std::vector<MergeCandidate>, std::greater<MergeCandidate>>;

    void push_candidate(const std::vector<Symbol>& word, std::ptrdiff_t left, CandidateQueue& queue) const {
        if (left < 0 || word[left].next < 0) return;
        if (const auto rule = merge_rule(word[left].id, word[word[left].next].id)) {
            queue.push({rule->rank, static_cast<std::size_t>(left), rule->merged_id});
        }
    }

    // tokenizers' Word::merge_all: merge the best pair, then queue the pairs it forms with its
    // neighbours; entries made stale by earlier merges are skipped when popped.
    void apply_merges(std::vector<Symbol>& word) const {
        CandidateQueue queue;
        for (std::size_t i = 0; i + 1 < word.size(); ++i) push_candidate(word, static_cast<std::ptrdiff_t>(i), queue);
        while (!queue.empty()) {
            const MergeCandidate top = queue.top();
            queue.pop();
            Symbol& left = word[top.pos];
            if (left.merged_away || left.next < 0) continue;
            Symbol& right = word[left.next];
            const auto rule = merge_rule(left.id, right.id);
            if (!rule || rule->merged_id != top.merged_id) continue;
            left.id = top.merged_id;
            left.next = right.next;
            right.merged_away = true;
            if (left.next >= 0) word[left.next].prev = static_cast<std::ptrdiff_t>(top.pos);
            push_candidate(word, left.prev, queue);
            push_candidate(word, static_cast<std::ptrdiff_t>(top.pos), queue);
        }
    }

    std::unordered_map<std::string, std::uint32_t> vocab_;
    std::unordered_map<std::uint64_t, MergeRule> merges_;
    std::string end_of_word_suffix_;
    std::optional<std::uint32_t> unk_id_;
};

}  // namespace

// ---------------------------------------------------------------------------------------------
// ClipTokenizer
// ---------------------------------------------------------------------------------------------

struct ClipTokenizer::Impl {
    Impl(const Json& root, int max_length_)
        : bpe(root.at("model")),
          max_length(max_length_),
          bos_id(post_processor_id(root.at("post_processor"), "cls")),
          eos_id(post_processor_id(root.at("post_processor"), "sep")),
          pad_id(padding_id(root, eos_id)) {
        check_normalizer(root.at("normalizer"));
        check_pre_tokenizer(root.at("pre_tokenizer"));
        read_added_tokens(root.at("added_tokens"));
    }

    // Normalized text between the added tokens found in the raw text.
    std::vector<Segment> normalized_segments(const std::string& utf8_text) const {
        std::vector<Segment> segments = split_on_added_tokens(decode_utf8(utf8_text), raw_tokens);
        for (Segment& segment : segments) {
            if (!segment.token_id) segment.text = normalize_text(segment.text);
        }
        return segments;
    }

    std::vector<std::int64_t> encode(const std::string& utf8_text) const {
        std::vector<std::int64_t> ids{bos_id};
        for (const Segment& segment : normalized_segments(utf8_text)) {
            if (segment.token_id) {
                ids.push_back(*segment.token_id);
                continue;
            }
            for (const Segment& piece : split_on_added_tokens(segment.text, normalized_tokens)) {
                if (piece.token_id) {
                    ids.push_back(*piece.token_id);
                } else {
                    append_text_ids(piece.text, ids);
                }
            }
        }
        // Truncation keeps the first ids, and BOS and EOS, as transformers' truncation=True.
        ids.resize(std::min(ids.size(), static_cast<std::size_t>(max_length) - 1));
        ids.push_back(eos_id);
        return ids;
    }

    void append_text_ids(const std::u32string& text, std::vector<std::int64_t>& ids) const {
        const auto& alphabet = byte_level_alphabet();
        std::vector<Range> words;
        for (const Range& clip_word : split_clip_words(text)) split_byte_level_words(text, clip_word, words);
        std::vector<const std::string*> symbols;
        for (const auto& [begin, end] : words) {
            symbols.clear();
            for (unsigned char byte : encode_utf8(std::u32string_view(text).substr(begin, end - begin))) {
                symbols.push_back(&alphabet[byte]);
            }
            bpe.encode_word(symbols, ids);
        }
    }

    void read_added_tokens(const Json& added_tokens) {
        for (const Json& entry : added_tokens) {
            const auto content = entry.at("content").get<std::string>();
            if (entry.value("single_word", false)) {
                throw Error("added token '" + content + "' is single_word, which CLIP's tokenizer does not use");
            }
            // lstrip and rstrip only move whitespace, which the pre-tokenizer drops anyway.
            if (entry.value("normalized", false)) {
                normalized_tokens.push_back({normalize_text(decode_utf8(content)), entry.at("id").get<std::int64_t>()});
            } else {
                raw_tokens.push_back({decode_utf8(content), entry.at("id").get<std::int64_t>()});
            }
        }
        std::stable_sort(raw_tokens.begin(), raw_tokens.end(), longer_content);
        std::stable_sort(normalized_tokens.begin(), normalized_tokens.end(), longer_content);
    }

    BpeModel bpe;
    std::vector<AddedToken> raw_tokens;         // matched in the text as given, longest first
    std::vector<AddedToken> normalized_tokens;  // matched in normalized text, longest first
    int max_length;
    std::int64_t bos_id;
    std::int64_t eos_id;
    std::int64_t pad_id;
};

ClipTokenizer::ClipTokenizer(std::shared_ptr<const Impl> impl) : impl_(std::move(impl)) {}

ClipTokenizer ClipTokenizer::from_file(const std::string& tokenizer_json_path, int max_length) {
    if (max_length < 2) {
        throw Error("max_length must be at least 2 (BOS and EOS), got " + std::to_string(max_length));
    }
    const std::string contents = read_file(tokenizer_json_path);
    Json root;
    try {
        root = Json::parse(contents);
    } catch (const Json::parse_error& e) {
        throw Error("malformed JSON in tokenizer file '" + tokenizer_json_path + "': " + e.what());
    }
    try {
        return ClipTokenizer(std::make_shared<const Impl>(root, max_length));
    } catch (const Error& e) {
        throw Error("tokenizer file '" + tokenizer_json_path + "': " + e.what());
    } catch (const Json::exception& e) {
        // A missing key or a value of the wrong type.
        throw Error("tokenizer file '" + tokenizer_json_path + "' is not a CLIP BPE tokenizer.json: " + e.what());
    }
}

ClipTokenizer ClipTokenizer::from_folder(const std::string& folder, int max_length) {
    return from_file((std::filesystem::path(folder) / "tokenizer.json").string(), max_length);
}

std::vector<std::int64_t> ClipTokenizer::encode(const std::string& utf8_text) const { return impl_->encode(utf8_text); }

std::string ClipTokenizer::normalize(const std::string& utf8_text) const {
    std::string out;
    for (const Segment& segment : impl_->normalized_segments(utf8_text)) out += encode_utf8(segment.text);
    return out;
}

int ClipTokenizer::max_length() const { return impl_->max_length; }
std::int64_t ClipTokenizer::bos_id() const { return impl_->bos_id; }
std::int64_t ClipTokenizer::eos_id() const { return impl_->eos_id; }
std::int64_t ClipTokenizer::pad_id() const { return impl_->pad_id; }

}  // namespace fastclipseg
