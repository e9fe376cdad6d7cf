# Decides whether the gpu/ target is built. PEERLIGHT_CUDA=AUTO builds it whenever nvcc is
# found (PATH or /usr/local/cuda); ON requires it; OFF never builds it.
set(PEERLIGHT_HAVE_CUDA OFF)
if(NOT PEERLIGHT_CUDA STREQUAL "OFF")
  if(NOT CMAKE_CUDA_COMPILER)
    find_program(PEERLIGHT_NVCC nvcc HINTS /usr/local/cuda/bin)
    if(PEERLIGHT_NVCC)
      set(CMAKE_CUDA_COMPILER ${PEERLIGHT_NVCC})
    endif()
  endif()
  if(CMAKE_CUDA_COMPILER)
    if(NOT CMAKE_CUDA_ARCHITECTURES)
      # Turing through Hopper as real code, plus PTX for newer GPUs to JIT.
      set(CMAKE_CUDA_ARCHITECTURES 75-real 80-real 86-real 89-real 90)
    endif()
    enable_language(CUDA)
    find_package(CUDAToolkit REQUIRED)
    set(PEERLIGHT_HAVE_CUDA ON)
  elseif(PEERLIGHT_CUDA STREQUAL "ON")
    message(FATAL_ERROR "PEERLIGHT_CUDA=ON but nvcc was not found")
  endif()
endif()
message(STATUS "peerlight: CUDA device ${PEERLIGHT_HAVE_CUDA}")

if(PEERLIGHT_HAVE_CUDA)
  # The root CMakeLists.txt adds GCC flags with add_compile_options(), which would reach nvcc
  # too (and nvcc rejects -ffp-contract=off). From here on, give them to C/C++ sources only,
  # and give CUDA sources the equivalent: no FMA contraction in device code (--fmad=false,
  # so that GPU arithmetic follows the CPU's rounding as closely as it can), and the same
  # host flags for the host half of .cu files.
  get_property(_pl_options DIRECTORY PROPERTY COMPILE_OPTIONS)
  set(_pl_wrapped)
  foreach(_pl_option IN LISTS _pl_options)
    if(_pl_option MATCHES "^\\$<")
      list(APPEND _pl_wrapped "${_pl_option}")  # already a generator expression
    else()
      list(APPEND _pl_wrapped "$<$<COMPILE_LANGUAGE:C,CXX>:${_pl_option}>")
    endif()
  endforeach()
  set_property(DIRECTORY PROPERTY COMPILE_OPTIONS ${_pl_wrapped})
  add_compile_options(
    "$<$<COMPILE_LANGUAGE:CUDA>:--fmad=false;-Xcompiler=-ffp-contract=off,-fno-fast-math>")
  # Kernel headers are C++17 (docs/DESIGN.md section 8); CMake 3.25 also knows no C++20 flag
  # for nvcc.
  set(CMAKE_CUDA_STANDARD 17)
  set(CMAKE_CUDA_STANDARD_REQUIRED ON)
endif()
