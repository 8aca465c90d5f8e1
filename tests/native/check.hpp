// The native tests' tiny harness (no framework): each check prints on failure,
// summary() prints "N passed, N failed" and gives the exit status (nonzero on
// any failure), which ctest, pytest's runner and CI read.
#pragma once

#include <cstdio>
#include <functional>
#include <stdexcept>
#include <string>

namespace fastclipseg::testing {

inline int g_passed = 0;
inline int g_failed = 0;

inline void check(bool ok, const std::string& what) {
    if (ok) {
        ++g_passed;
    } else {
        ++g_failed;
        std::printf("FAIL: %s\n", what.c_str());
    }
}

template <class A, class B>
void check_eq(const A& got, const B& want, const std::string& what) {
    check(got == want, what);
}

// Expects fn to throw std::invalid_argument whose message contains `needle`.
inline void check_throws(const std::function<void()>& fn, const std::string& needle,
                         const std::string& what) {
    try {
        fn();
    } catch (const std::invalid_argument& e) {
        const bool ok = std::string(e.what()).find(needle) != std::string::npos;
        if (!ok) std::printf("  message was: %s\n", e.what());
        check(ok, what + " (message mentions '" + needle + "')");
        return;
    } catch (...) {
        check(false, what + " (threw something other than std::invalid_argument)");
        return;
    }
    check(false, what + " (did not throw)");
}

// Prints the summary line; the process's exit status.
inline int summary() {
    std::printf("%d passed, %d failed\n", g_passed, g_failed);
    return g_failed == 0 ? 0 : 1;
}

}  // namespace fastclipseg::testing
