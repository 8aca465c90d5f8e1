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
    fastclipseg_find_libtorch(torch_found torch_libraries torch_include_dirs torch_definitions)
    if(NOT OpenSSL_FOUND OR NOT torch_found)
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
        PRIVATE ${torch_libraries} OpenSSL::Crypto nlohmann_json::nlohmann_json)
    target_include_directories(fastclipseg_runtime SYSTEM PRIVATE ${torch_include_dirs})
    target_compile_definitions(fastclipseg_runtime PRIVATE ${torch_definitions})
    # libtorch's flags (its C++ ABI) only for the runtime's sources: the public header has no torch.
    separate_arguments(torch_flags UNIX_COMMAND "${TORCH_CXX_FLAGS}")
    target_compile_options(fastclipseg_runtime PRIVATE ${torch_flags})
endfunction()

# libtorch for the runtime: TORCH_LIBRARIES from find_package(Torch), or, for a CUDA build of
# torch on a machine without the CUDA toolkit, its CPU libraries directly. PyPI's torch for Linux
# is a CUDA build, and its CMake config stops with a fatal error ("Your installed Caffe2 version
# uses CUDA but I cannot find the CUDA libraries") where the CUDA toolkit is missing, although the runtime
# runs TorchScript on the CPU. Linked that way, the runtime has no CUDA (a CUDA device is an error).
function(fastclipseg_find_libtorch found_var libraries_var include_dirs_var definitions_var)
    set(caffe2_config "")
    foreach(prefix IN LISTS Torch_DIR CMAKE_PREFIX_PATH)
        foreach(candidate "${prefix}/../Caffe2/Caffe2Config.cmake" "${prefix}/Caffe2/Caffe2Config.cmake"
                          "${prefix}/share/cmake/Caffe2/Caffe2Config.cmake")
            if(NOT caffe2_config AND EXISTS "${candidate}")
                get_filename_component(caffe2_config "${candidate}" ABSOLUTE)
            endif()
        endforeach()
    endforeach()
    set(cpu_only FALSE)
    if(caffe2_config)
        file(READ "${caffe2_config}" caffe2_text)
        string(FIND "${caffe2_text}" "set(CAFFE2_USE_CUDA 1)" cuda_build)
        if(NOT cuda_build EQUAL -1)
            # Whether torch's config accepts this machine's CUDA (headers, cudart, nvcc...) is
            # asked of the config itself, in a separate configure run: its error is fatal here.
            if(NOT DEFINED FASTCLIPSEG_TORCH_CONFIG_WORKS)
                set(probe "${CMAKE_BINARY_DIR}/fastclipseg-torch-probe")
                file(WRITE "${probe}/CMakeLists.txt"
                     "cmake_minimum_required(VERSION 3.18)\nproject(probe LANGUAGES CXX)\nfind_package(Torch REQUIRED)\n")
                set(probe_options "-DCMAKE_PREFIX_PATH=${CMAKE_PREFIX_PATH}")
                if(Torch_DIR)
                    list(APPEND probe_options "-DTorch_DIR=${Torch_DIR}")
                endif()
                execute_process(COMMAND "${CMAKE_COMMAND}" -S "${probe}" -B "${probe}/build" ${probe_options}
                                "-DCMAKE_CXX_COMPILER=${CMAKE_CXX_COMPILER}"
                                RESULT_VARIABLE probe_status OUTPUT_QUIET ERROR_QUIET)
                if(probe_status EQUAL 0)
                    set(FASTCLIPSEG_TORCH_CONFIG_WORKS TRUE CACHE INTERNAL "find_package(Torch) works here")
                else()
                    set(FASTCLIPSEG_TORCH_CONFIG_WORKS FALSE CACHE INTERNAL "find_package(Torch) works here")
                endif()
            endif()
            if(NOT FASTCLIPSEG_TORCH_CONFIG_WORKS)
                set(cpu_only TRUE)
            endif()
        endif()
    endif()
    if(NOT cpu_only)
        find_package(Torch QUIET)
        set(${found_var} "${Torch_FOUND}" PARENT_SCOPE)
        set(${libraries_var} "${TORCH_LIBRARIES}" PARENT_SCOPE)
        set(${include_dirs_var} "" PARENT_SCOPE)
        set(${definitions_var} "" PARENT_SCOPE)
        return()
    endif()
    get_filename_component(torch_root "${caffe2_config}/../../../.." ABSOLUTE)
    find_library(fastclipseg_torch_cpu torch_cpu PATHS "${torch_root}/lib" NO_DEFAULT_PATH)
    find_library(fastclipseg_c10 c10 PATHS "${torch_root}/lib" NO_DEFAULT_PATH)
    if(NOT fastclipseg_torch_cpu OR NOT fastclipseg_c10 OR NOT EXISTS "${torch_root}/include/torch/script.h")
        set(${found_var} FALSE PARENT_SCOPE)
        return()
    endif()
    message(STATUS "fastclipseg: ${torch_root} is a CUDA build of torch and there is no CUDA toolkit: "
                   "the runtime links its CPU libraries (torch_cpu, c10) and runs on the CPU only")
    set(${found_var} TRUE PARENT_SCOPE)
    set(${libraries_var} "${fastclipseg_torch_cpu};${fastclipseg_c10}" PARENT_SCOPE)
    set(${include_dirs_var} "${torch_root}/include;${torch_root}/include/torch/csrc/api/include" PARENT_SCOPE)
    # What torch_cpu's imported target would give its users (Caffe2Targets.cmake).
    set(${definitions_var} "USE_DISTRIBUTED;USE_C10D_GLOO;USE_RPC;USE_TENSORPIPE" PARENT_SCOPE)
endfunction()
