#!/usr/bin/env python3
# SPDX-License-Identifier: MIT
"""The layering check: library code includes only headers of its own layer or
of the layers below it (docs/ARCHITECTURE.md, "Layers").

    svm/ > mm/ > src/ > engines/ > vfio/ > base/

Public headers (<ugpu/...>) may be included by every layer; library code may
not include anything from tools/ or tests/. Where a lower layer must reach a
higher one, the higher one registers hooks or ops (src/device.h components,
src/rpm.h hooks, src/suspend.h and src/unplug.h memory ops).

Usage: check-layers.py [SOURCE_DIR]    exit 0: clean; 1: violations listed.
"""
import os
import re
import sys

LAYERS = [  # (folder, rank): the longest matching folder wins
    ("base", 0),
    ("vfio", 1),
    ("engines", 2),
    ("src", 3),
    ("mm", 4),
    ("svm", 5),
]
FORBIDDEN = ("tools/", "tests/")
INCLUDE = re.compile(r'^\s*#\s*include\s+"([^"]+)"')


def layer_of(path):
    best = None
    for folder, rank in LAYERS:
        if path == folder or path.startswith(folder + "/"):
            if best is None or len(folder) > len(best[0]):
                best = (folder, rank)
    return best


def main():
    root = os.path.abspath(sys.argv[1] if len(sys.argv) > 1 else
                           os.path.join(os.path.dirname(__file__), ".."))
    bad = []
    files = 0
    for folder, _ in LAYERS:
        top = os.path.join(root, folder)
        if not os.path.isdir(top):
            continue
        for d, _, names in os.walk(top):
            for n in sorted(names):
                if not n.endswith((".c", ".h")):
                    continue
                path = os.path.relpath(os.path.join(d, n), root)
                src = layer_of(path)
                if src[0] != folder:
                    continue  # counted under its own (deeper) folder
                files += 1
                with open(os.path.join(root, path), encoding="utf-8") as f:
                    for lineno, line in enumerate(f, 1):
                        m = INCLUDE.match(line)
                        if not m:
                            continue
                        inc = m.group(1)
                        if inc.startswith(FORBIDDEN):
                            bad.append(f"{path}:{lineno}: includes {inc}: library code may not reach tools/ or tests/")
                            continue
                        dst = layer_of(inc)
                        if dst is None:
                            continue  # a header next to the file, or not ours
                        if dst[1] > src[1]:
                            bad.append(f"{path}:{lineno}: {src[0]}/ (layer {src[1]}) includes {inc} "
                                       f"from {dst[0]}/ (layer {dst[1]}), a layer above it")
    for b in bad:
        print(b)
    print(f"layers: {files} files checked, {len(bad)} upward includes")
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
