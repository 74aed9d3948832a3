/* SPDX-License-Identifier: MIT */
#ifndef UGPU_EXPORT_H
#define UGPU_EXPORT_H

/*
 * UGPU_API marks the symbols libugpu.so exports. The library is built with
 * -fvisibility=hidden, so anything without it stays internal; the version
 * script (src/libugpu.map) then binds each export to a release node.
 */
#if defined(__GNUC__)
#define UGPU_API __attribute__((visibility("default")))
#else
#define UGPU_API
#endif

#endif
