# Build-time check: ugpu-demo uses only the public API.
#
# The demo shows the library as a user's program sees it, so every #include
# in DIR/*.c and DIR/*.h must be one of:
#   <ugpu/NAME.h>           the public API (include/ugpu/);
#   <NAME.h> of the C library: the C11 headers and the POSIX/glibc ones
#                           listed in libc_headers below (add one there when
#                           the demo needs it; never a driver or kernel header);
#   "tools/ugpu-sim/sim.h"  the reference device the demo starts in-process:
#                           it is the hardware, not the driver;
#   "tools/common/cli.h"    the command-line parser every tool shares: C
#                           library only, not the driver;
#   "tools/common/progress_bar.h"  the tools' progress bars: public API only.
# Anything else (src/, mm/, engines/, <linux/...>, a macro) stops the build
# and names the file and the include. What the demo needs that the public API
# lacks becomes public API, or moves into a test.
#
# Usage: cmake -DDIR=<tools/ugpu-demo> -DSTAMP=<file written on success> -P demo_includes.cmake
set(libc_headers
  # C11
  assert complex ctype errno fenv float inttypes iso646 limits locale math setjmp signal
  stdalign stdarg stdatomic stdbool stddef stdint stdio stdlib stdnoreturn string tgmath
  threads time uchar wchar wctype
  # POSIX / glibc
  fcntl getopt poll pthread sched strings unistd sys/mman sys/stat sys/time sys/types sys/wait)
list(JOIN libc_headers "|" libc_re)
set(allowed "^<(ugpu/[A-Za-z0-9_]+|${libc_re})\\.h>$|^\"tools/(ugpu-sim/sim|common/cli|common/progress_bar)\\.h\"$")

file(GLOB files "${DIR}/*.c" "${DIR}/*.h")
set(bad "")
foreach(f IN LISTS files)
  file(STRINGS "${f}" lines REGEX "^[ \t]*#[ \t]*include")
  foreach(line IN LISTS lines)
    string(REGEX REPLACE "^[ \t]*#[ \t]*include(_next)?[ \t]*" "" what "${line}")
    string(REGEX REPLACE "/[*/].*$" "" what "${what}")
    string(STRIP "${what}" what)
    if(NOT line MATCHES "^[ \t]*#[ \t]*include[ \t<\"]" OR NOT what MATCHES "${allowed}")
      get_filename_component(name "${f}" NAME)
      string(APPEND bad "\n  ${name}: ${line}")
    endif()
  endforeach()
endforeach()
if(bad)
  message(FATAL_ERROR "ugpu-demo may include only <ugpu/*.h>, C library headers and "
    "\"tools/ugpu-sim/sim.h\" (cmake/demo_includes.cmake):${bad}")
endif()
file(WRITE "${STAMP}" "ok\n")
