// tokenize TOKENIZER_JSON [MAX_LENGTH]
//
// Reads JSON lines from stdin, each a JSON string, and writes one line per input line: the
// string's token ids as a JSON array, or {"error": "..."} when the line is not a JSON string or
// not valid UTF-8. Exits 2, with a message on stderr, when the tokenizer file cannot be used.
#include <cstdlib>
#include <iostream>
#include <nlohmann/json.hpp>
#include <string>

#include <fastclipseg/tokenizer.hpp>

namespace {

using Json = nlohmann::json;

constexpr int kUsageError = 2;

// Error text may quote the bad bytes of the input; they are replaced so the line stays JSON.
std::string error_line(const std::string& message) {
    return Json{{"error", message}}.dump(-1, ' ', false, Json::error_handler_t::replace);
}

std::string encode_line(const fastclipseg::ClipTokenizer& tokenizer, const std::string& line) {
    try {
        const Json value = Json::parse(line);
        if (!value.is_string()) return error_line(std::string("expected a JSON string, got a ") + value.type_name());
        return Json(tokenizer.encode(value.get<std::string>())).dump();
    } catch (const Json::exception& e) {
        return error_line(std::string("invalid JSON line: ") + e.what());
    } catch (const fastclipseg::Error& e) {
        return error_line(e.what());
    }
}

bool parse_max_length(const char* text, int& max_length) {
    char* end = nullptr;
    const long value = std::strtol(text, &end, 10);
    if (end == text || *end != '\0' || value < 0 || value > 1'000'000) return false;
    max_length = static_cast<int>(value);
    return true;
}

}  // namespace

int main(int argc, char** argv) {
    int max_length = 77;
    if (argc < 2 || argc > 3 || (argc == 3 && !parse_max_length(argv[2], max_length))) {
        std::cerr << "usage: tokenize TOKENIZER_JSON [MAX_LENGTH]\n"
                     "  reads JSON strings, one per line, from stdin; writes their token ids\n";
        return kUsageError;
    }
    try {
        const auto tokenizer = fastclipseg::ClipTokenizer::from_file(argv[1], max_length);
        std::string line;
        // Flushed per line, so that a caller may feed one line and wait for its answer.
        while (std::getline(std::cin, line)) std::cout << encode_line(tokenizer, line) << std::endl;
    } catch (const fastclipseg::Error& e) {
        std::cerr << "error: " << e.what() << '\n';
        return kUsageError;
    }
    return 0;
}
