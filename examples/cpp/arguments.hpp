// The examples' command line: positional arguments and an optional "--threshold T".
#pragma once

#include <cstdlib>
#include <iostream>
#include <optional>
#include <string>
#include <vector>

struct Arguments {
    std::vector<std::string> positional;
    double threshold = 0.5;
};

// nullopt, after saying why on stderr, when --threshold has no value or a value that is not a number.
inline std::optional<Arguments> parse_arguments(int argc, char** argv) {
    Arguments parsed;
    for (int i = 1; i < argc; ++i) {
        const std::string arg = argv[i];
        if (arg != "--threshold") {
            parsed.positional.push_back(arg);
            continue;
        }
        char* end = nullptr;
        const char* value = i + 1 < argc ? argv[++i] : "";
        parsed.threshold = std::strtod(value, &end);
        if (*value == '\0' || *end != '\0') {
            std::cerr << "error: --threshold needs a number, got '" << value << "'\n";
            return std::nullopt;
        }
    }
    return parsed;
}
