// FASTCLIPSEG_API marks the classes and functions of the public C++ interface.
//
// The library is compiled with -fvisibility=hidden, so only what carries this mark is exported
// from a shared build. On Windows, define FASTCLIPSEG_BUILDING_SHARED while building the DLL and
// FASTCLIPSEG_USING_SHARED in code that links it; a static build needs neither.
#pragma once

#if defined(_WIN32)
#    if defined(FASTCLIPSEG_BUILDING_SHARED)
#        define FASTCLIPSEG_API __declspec(dllexport)
#    elif defined(FASTCLIPSEG_USING_SHARED)
#        define FASTCLIPSEG_API __declspec(dllimport)
#    else
#        define FASTCLIPSEG_API
#    endif
#else
#    define FASTCLIPSEG_API __attribute__((visibility("default")))
#endif
