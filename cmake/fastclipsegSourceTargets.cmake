# fastclipseg::tokenizer and fastclipseg::runtime, compiled in the project that uses them from the
# installed sources (the project's own build calls the same functions on csrc/). Arguments: the
# folder holding tokenizer/ and runtime/, and the include folder holding fastclipseg/*.hpp.
#
# Why from sources: libtorch has no stable C++ ABI from one release to the next, so a runtime
# compiled into the wheel would break as soon as torch is upgraded; compiled here, it always
# matches the libtorch the application links. The tokenizer follows it, so its Unicode and JSON
# libraries are the application's too. Each function leaves FASTCLIPSEG_MISSING_DEPENDENCIES set
# to what it did not find, and defines no target then.

function(fastclipseg_add_tokenizer source_dir include_dir)
    if(TARGET fastclipseg::tokenizer)
        return()
    endif()
    find_package(ICU QUIET COMPONENTS uc)
    find_package(nlohmann_json 3 QUIET)
    if(NOT ICU_FOUND OR NOT nlohmann_json_FOUND)
        set(FASTCLIPSEG_MISSING_DEPENDENCIES
            "the tokenizer needs ICU (uc) and nlohmann_json 3 (Debian: libicu-dev nlohmann-json3-dev)" PARENT_SCOPE)
        return()
    endif()
    add_library(fastclipseg_tokenizer STATIC "${source_dir}/tokenizer/clip_tokenizer.cpp")
    add_library(fastclipseg::tokenizer ALIAS fastclipseg_tokenizer)
    target_include_directories(fastclipseg_tokenizer PUBLIC "${include_dir}")
    target_compile_features(fastclipseg_tokenizer PUBLIC cxx_std_17)
    set_target_properties(fastclipseg_tokenizer PROPERTIES
        POSITION_INDEPENDENT_CODE ON CXX_VISIBILITY_PRESET hidden VISIBILITY_INLINES_HIDDEN ON)
    target_link_libraries(fastclipseg_tokenizer PRIVATE ICU::uc nlohmann_json::nlohmann_json)
endfunction()

function(fastclipseg_add_runtime source_dir include_dir)
    if(TARGET fastclipseg::runtime)
        return()
    endif()
    fastclipseg_add_tokenizer("${source_dir}" "${include_dir}")
    if(NOT TARGET fastclipseg::tokenizer)
        set(FASTCLIPSEG_MISSING_DEPENDENCIES "${FASTCLIPSEG_MISSING_DEPENDENCIES}" PARENT_SCOPE)
        return()
    endif()
    find_package(OpenSSL QUIET COMPONENTS Crypto)
    find_package(Torch QUIET)
    if(NOT OpenSSL_FOUND OR NOT Torch_FOUND)
        set(FASTCLIPSEG_MISSING_DEPENDENCIES
            "the runtime needs OpenSSL (libssl-dev) and libtorch: add the output of python -c \"import torch; print(torch.utils.cmake_prefix_path)\" to CMAKE_PREFIX_PATH"
            PARENT_SCOPE)
        return()
    endif()
    add_library(fastclipseg_runtime STATIC
        "${source_dir}/runtime/segmenter.cpp"
        "${source_dir}/runtime/export_folder.cpp"
        "${source_dir}/runtime/segmentation_json.cpp")
    add_library(fastclipseg::runtime ALIAS fastclipseg_runtime)
    set_target_properties(fastclipseg_runtime PROPERTIES
        POSITION_INDEPENDENT_CODE ON CXX_VISIBILITY_PRESET hidden VISIBILITY_INLINES_HIDDEN ON)
    target_link_libraries(fastclipseg_runtime
        PUBLIC fastclipseg::tokenizer fastclipseg::kernels
        PRIVATE ${TORCH_LIBRARIES} OpenSSL::Crypto nlohmann_json::nlohmann_json)
    # libtorch's flags (its C++ ABI) only for the runtime's sources: the public header has no torch.
    separate_arguments(torch_flags UNIX_COMMAND "${TORCH_CXX_FLAGS}")
    target_compile_options(fastclipseg_runtime PRIVATE ${torch_flags})
endfunction()
