"""The tokenize example (C++ ClipTokenizer, examples/cpp/tokenize.cpp) against transformers'
CLIPTokenizer, token for token.

The C++ program reads JSON strings, one per line, and writes their ids; every text here goes
through it twice, once with \\u escapes and once as raw UTF-8.
"""

from __future__ import annotations

import json
import random
import subprocess
from pathlib import Path

import pytest

MAX_LENGTH = 77

ASCII_TEXTS = [
    "a photo of a cat",
    "A PHOTO OF A CAT",
    "Hello, World!",
    "the quick brown fox jumps over the lazy dog",
    "red car; blue car.",
    "(parenthesised) [bracketed] {braced}",
    "e-mail@example.com",
    "https://example.com/path?q=1&r=2#frag",
    "C++ and C#",
    "snake_case camelCase kebab-case",
    "$100 & 50% off!!!",
    "...",
    "a...b",
    "?!",
    "#hashtag @mention",
    "~`^*=+|\\/<>",
]
CONTRACTION_TEXTS = [
    "it's",
    "we'LL",
    "don't!",
    "I'm here",
    "they're",
    "we've",
    "he'd",
    "IT'S",
    "'s",
    "''s",
    "'sa",
    "rock'n'roll",
    "o'clock",
    "y'all'd've",
    "it\u2019s",
    "'S'T'RE'VE'M'LL'D",
    "x'<|endoftext|>",
]
NUMBER_TEXTS = [
    "1234",
    "3.14",
    "1,000,000",
    "2024-01-01",
    "v1.2.3",
    "x2",
    "٣٤٥",
    "१२३",
    "½ ⅓ Ⅻ ²",
    "①②",
    "𝟘𝟙",
]
ACCENT_TEXTS = [
    "café",
    "cafe\u0301",
    "e\u0301",
    "Ångström",
    "A\u030angstro\u0308m",
    "naïve",
    "nai\u0308ve",
    "\u212b \u2126",  # Angstrom and ohm signs: NFC maps them to Å and Ω
    "q\u0307\u0323",
    "e\u0323\u0302",
    "ệ",
    "\u0301",
    "a\u0301\u0301\u0301",
    "ﬁ ﬀ",
    "Ǆ ǅ ǆ",
    "\u0390",
    "K\u212a",  # Kelvin sign
    # tokenizers' NFC has Unicode 9.0 tables: it neither composes these (Unicode 13.0) ...
    "\U00011935\U00011930",
    # ... nor reorders marks that Unicode 9.0 did not have.
    "\U000168ad\u05b0\u08d1\u1ab0",
]
SCRIPT_TEXTS = [
    "Привет, мир!",
    "ЁЛКА",
    "Съешь же ещё этих мягких французских булок",
    "ΣΑΣ",
    "Σίσυφος",
    "ΟΔΥΣΣΕΥΣ",
    "ς σ Σ",
    "ὈΔΥΣΣΕΎΣ",
    "ᾼ",
    "猫の写真",
    "一只猫在沙发上",
    "\u6771\u4eac\u30bf\u30ef\u30fc",
    "ｆｕｌｌＷＩＤＴＨ",
    "「引用」〜",
    "고양이 사진",
    "\u1100\u1161\u11a8",  # conjoining jamo
    "\u1112\u1161\u11ab\u1100\u116e\u11a8\u110b\u1165",
    "한국어",
    "صورة قطة",
    "\u0645\u064e\u0631\u0652\u062d\u064e\u0628\u064b\u0627",
    "שלום עולם",
    "\u05e9\u05c1\u05b8\u05dc\u05d5\u05b9\u05dd",
    "\u0928\u092e\u0938\u094d\u0924\u0947 \u0926\u0941\u0928\u093f\u092f\u093e",
    "\u0958",  # a composition exclusion: NFC decomposes it
    "\u0915\u093c",
    "\u0e2a\u0e27\u0e31\u0e2a\u0e14\u0e35\u0e0a\u0e32\u0e27\u0e42\u0e25\u0e01",
    "İstanbul",
    "ISTANBUL \u0131i I\u0307",
    "Straße STRASSE ẞ",
    "𐐀𐐨",
    "𞤀",
    "𝐀𝐚",
    "Ⓐⓐ",
]
EMOJI_TEXTS = [
    "🐱",
    "\U0001f468\u200d\U0001f469\u200d\U0001f467\u200d\U0001f466",
    "🇫🇷🇩🇪",
    "👍🏽",
    "\U0001f3f3\ufe0f\u200d\U0001f308",
    "\u2764\ufe0f",
    "a🐱b",
    "🐱🐱🐱",
    "1\ufe0f\u20e3",
]
WHITESPACE_AND_CONTROL_TEXTS = [
    "",
    " ",
    "   ",
    "\t",
    "\n\n",
    "a\tb\nc",
    "carriage\r\nreturn",
    "  leading",
    "trailing  ",
    "a\u00a0b",
    "a\u3000b",
    "a\u2028b",
    "a\u2029b",
    "a\u200bb",
    "\u200b",
    "a\ufeffb",
    "\ufeff",
    "a\u0085b",
    "a\u1680b",
    "a\u202fb\u205fc",
    "a\u180eb",
    "a\u200cb\u200dc\u2060d",
    "\x0b\x0c",
    "\x00",
    "a\x00b",
    "\x01\x02\x03",
    "\x1b[31mred\x1b[0m",
    "\x7f",
    "a\x1cb\x1dc\x1ed\x1fe",
    "\u0080\u009f",
    "\ue000 \uffff \U0010ffff \u0378 \U000e0041",
]
SPECIAL_TOKEN_TEXTS = [
    "<|endoftext|>",
    "x<|endoftext|>y",
    "<|startoftext|>a photo",
    "<|ENDOFTEXT|>",
    "<|EndOfText|> and <|STARTOFTEXT|>",
    "<|endoftext|",
    "<<|endoftext|>>",
    "<|end<|endoftext|>oftext|>",
    "<|startoftext|><|endoftext|>",
    "e<|endoftext|>\u0301",
    "a <|endoftext|> " * 30,
]
LONG_TEXTS = [
    "a photo of " * 40,
    "word " * 100,
    "1234567890" * 10,
    "猫" * 100,
    "🐱" * 50,
    "a" * 300,
    "supercalifragilisticexpialidocious " * 8,
]

FIXED_TEXTS = (
    ASCII_TEXTS
    + CONTRACTION_TEXTS
    + NUMBER_TEXTS
    + ACCENT_TEXTS
    + SCRIPT_TEXTS
    + EMOJI_TEXTS
    + WHITESPACE_AND_CONTROL_TEXTS
    + SPECIAL_TOKEN_TEXTS
    + LONG_TEXTS
)

# Pieces that random texts are made of, by kind.
RANDOM_ALPHABETS = {
    "ascii": "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ",
    "punctuation": "!\"#$%&'()*+,-./:;<=>?@[\\]^_`{|}~",
    "digits": "0123456789\u0660\u0661\u0966\u00b2\u2155\u2162",
    "latin": "\u00e0\u00e9\u00ee\u00f5\u00fc\u00c7\u00d1\u00df\u0130\u0131\u0142\u0153\u1e9e\u01c5",
    "combining": "\u0300\u0301\u0302\u0303\u0308\u030a\u0323\u0327\u0345",
    "cyrillic": "\u0410\u0411\u0412\u0416\u042f\u0430\u0431\u0432\u0436\u044f\u0451\u0401",
    "greek": "\u0391\u0392\u0393\u03a3\u03a9\u03b1\u03b2\u03b3\u03c2\u03c3\u03c9\u0386\u1f00\u1fbc",
    "cjk": "\u732b\u72ac\u5199\u771f\u6771\u4eac\u3042\u3044\u30a2\u30a4\u30fc\uff41\uff21",
    "hangul": "\uace0\uc591\uc774\uc0ac\uc9c4\ud55c\u1100\u1161\u11a8\u1112\u11ab",
    "arabic": "\u0627\u0628\u062a\u062b\u0642\u0637\u0629\u064e\u064b\u0652",
    "hebrew": "\u05d0\u05d1\u05d2\u05e9\u05dc\u05d5\u05dd\u05b8\u05c1",
    "devanagari": "\u0915\u0916\u0917\u0928\u092e\u0938\u094d\u0924\u0947\u093c\u0958",
    "thai": "\u0e01\u0e02\u0e2a\u0e27\u0e31\u0e14\u0e35\u0e42\u0e25",
    "emoji": "\U0001f431\U0001f436\u2764\ufe0f\u200d\U0001f3fd\U0001f1eb\U0001f1f7\U0001f308\u20e3",
    "whitespace": " \t\n\r\u00a0\u3000\u2028\u2029\u0085\u200b\ufeff\u180e\x0b",
    "control": "\x00\x01\x1b\x1c\x1f\x7f\u0080",
}
RANDOM_WORDS = ["<|endoftext|>", "<|startoftext|>", "<|ENDOFTEXT|>", "'s", "'ll", "'RE", "n't", "photo", "of"]


def random_text(rng: random.Random) -> str:
    """A few runs of characters from random alphabets, some words, and random separators."""
    parts = []
    for _ in range(rng.randint(1, 12)):
        if rng.random() < 0.15:
            parts.append(rng.choice(RANDOM_WORDS))
        else:
            alphabet = RANDOM_ALPHABETS[rng.choice(list(RANDOM_ALPHABETS))]
            parts.append("".join(rng.choice(alphabet) for _ in range(rng.randint(1, 10))))
        parts.append(rng.choice(["", " ", " ", "  ", rng.choice(RANDOM_ALPHABETS["whitespace"])]))
    return "".join(parts)


def all_texts() -> list[str]:
    rng = random.Random(20250917)
    return FIXED_TEXTS + [random_text(rng) for _ in range(300)]


@pytest.fixture(scope="module")
def clip_folder(shared_data) -> Path:
    folder = shared_data / "clipseg-shapes"
    if not (folder / "tokenizer.json").is_file():
        pytest.skip(f"{folder} has no tokenizer.json")
    return folder


@pytest.fixture(scope="module")
def reference(clip_folder):
    from transformers import CLIPTokenizer

    return CLIPTokenizer.from_pretrained(clip_folder)


def run_tokenize(exe: Path, tokenizer_json: Path, stdin: bytes, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [str(exe), str(tokenizer_json), *args], input=stdin, capture_output=True, timeout=120, check=False
    )


def cpp_ids(exe: Path, clip_folder: Path, texts: list[str], max_length: int, ensure_ascii: bool) -> list:
    stdin = "".join(json.dumps(text, ensure_ascii=ensure_ascii) + "\n" for text in texts).encode()
    result = run_tokenize(exe, clip_folder / "tokenizer.json", stdin, str(max_length))
    assert result.returncode == 0, result.stderr.decode(errors="replace")
    return [json.loads(line) for line in result.stdout.decode().splitlines()]


def mismatches(texts: list[str], expected: list, got: list) -> list:
    assert len(got) == len(texts)
    return [(text, want, have) for text, want, have in zip(texts, expected, got) if want != have]


@pytest.mark.parametrize("ensure_ascii", [True, False], ids=["escaped", "raw-utf8"])
def test_ids_equal_transformers(tokenize_exe, clip_folder, reference, ensure_ascii):
    texts = all_texts()
    assert len(texts) >= 300
    expected = [reference(text, truncation=True, max_length=MAX_LENGTH)["input_ids"] for text in texts]
    wrong = mismatches(texts, expected, cpp_ids(tokenize_exe, clip_folder, texts, MAX_LENGTH, ensure_ascii))
    assert not wrong, f"{len(wrong)} of {len(texts)} texts differ, first ones: {wrong[:3]}"


@pytest.mark.parametrize("max_length", [2, 3, 10])
def test_truncation_equals_transformers(tokenize_exe, clip_folder, reference, max_length):
    texts = LONG_TEXTS + SPECIAL_TOKEN_TEXTS + ["a photo", ""]
    expected = [reference(text, truncation=True, max_length=max_length)["input_ids"] for text in texts]
    got = cpp_ids(tokenize_exe, clip_folder, texts, max_length, ensure_ascii=True)
    assert not mismatches(texts, expected, got)
    assert all(len(ids) <= max_length for ids in got)


def test_bad_lines_give_error_lines(tokenize_exe, clip_folder, reference):
    stdin = b'"caf\xc3"\n"\xff\xfe"\n"\xed\xa0\x80"\n42\nnot json\n"a photo"\n'
    result = run_tokenize(tokenize_exe, clip_folder / "tokenizer.json", stdin)
    assert result.returncode == 0, result.stderr.decode(errors="replace")
    lines = [json.loads(line) for line in result.stdout.decode().splitlines()]
    assert len(lines) == 6
    assert all("error" in line for line in lines[:5])
    assert "UTF-8" in lines[0]["error"]
    assert lines[5] == reference("a photo")["input_ids"]


def test_missing_tokenizer_file_exits_2_naming_it(tokenize_exe, tmp_path):
    missing = tmp_path / "no-such-folder" / "tokenizer.json"
    result = run_tokenize(tokenize_exe, missing, b'"a photo"\n')
    assert result.returncode == 2
    assert str(missing) in result.stderr.decode()


def test_other_tokenizer_exits_2_saying_what_it_is(tokenize_exe, clip_folder, tmp_path):
    tokenizer = json.loads((clip_folder / "tokenizer.json").read_text(encoding="utf-8"))
    tokenizer["model"]["type"] = "WordPiece"
    path = tmp_path / "tokenizer.json"
    path.write_text(json.dumps(tokenizer), encoding="utf-8")
    result = run_tokenize(tokenize_exe, path, b'"a photo"\n')
    assert result.returncode == 2
    assert "WordPiece" in result.stderr.decode()
    assert str(path) in result.stderr.decode()
