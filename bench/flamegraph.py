#!/usr/bin/env python3
"""Folds `perf script` call stacks and draws them as a flame graph (SVG).

    perf script -i perf.data | bench/flamegraph.py --svg out.svg [--title T]
    perf script -i perf.data | bench/flamegraph.py --folded          # "a;b;c count" lines
    perf script -i perf.data | bench/flamegraph.py --top 15          # heaviest leaf paths

Each frame's width is its share of the samples; children sit above their parent, sorted by
name so that two graphs of the same program can be compared side by side. Frames narrower
than --min-width pixels are left out of the SVG (their samples still count in the parent).
Only the Python standard library is used, so it runs wherever perf does.
"""
import argparse
import collections
import hashlib
import html
import re
import sys

# A frame line of `perf script`: address, symbol (maybe with +offset), then (dso).
FRAME = re.compile(r"^\s+[0-9a-f]+\s+(.+?)\s+\(([^)]*)\)\s*$")


def symbol(name, dso):
    name = re.sub(r"\+0x[0-9a-f]+$", "", name)
    if name == "[unknown]":
        return "[" + dso.rsplit("/", 1)[-1] + "]" if dso and dso != "[unknown]" else "[unknown]"
    return name


def fold(lines):
    """Counts each distinct stack, root first, with the command name as its root."""
    stacks = collections.Counter()
    comm, frames = None, []

    def flush():
        if comm is not None:
            stacks[";".join([comm] + frames[::-1])] += 1

    for line in lines:
        if not line.strip():
            flush()
            comm, frames = None, []
            continue
        if not line[0].isspace():
            flush()
            comm, frames = line.split()[0], []
            continue
        m = FRAME.match(line)
        if m and comm is not None:
            frames.append(symbol(m.group(1), m.group(2)))
    flush()
    return stacks


class Node:
    __slots__ = ("name", "count", "children")

    def __init__(self, name):
        self.name, self.count, self.children = name, 0, {}


def tree(stacks):
    root = Node("all")
    for stack, count in stacks.items():
        root.count += count
        node = root
        for name in stack.split(";"):
            node = node.children.setdefault(name, Node(name))
            node.count += count
    return root


def colour(name):
    # Warm colours, stable per name, so a function keeps its colour from graph to graph.
    h = hashlib.md5(name.encode()).digest()
    return "rgb({},{},{})".format(205 + h[0] % 50, 80 + h[1] % 130, 40 + h[2] % 50)


def svg(root, title, width, min_width):
    frame_h, top_pad, side = 16, 36, 10
    scale = (width - 2 * side) / max(root.count, 1)
    rects = []
    depth_max = 0

    def draw(node, x, depth):
        nonlocal depth_max
        w = node.count * scale
        if w < min_width:
            return
        depth_max = max(depth_max, depth)
        rects.append((node, x, depth, w))
        cx = x
        for child in sorted(node.children.values(), key=lambda n: n.name):
            draw(child, cx, depth + 1)
            cx += child.count * scale

    draw(root, side, 0)
    height = top_pad + (depth_max + 1) * frame_h + 10
    out = [
        '<?xml version="1.0" standalone="no"?>',
        '<svg version="1.1" xmlns="http://www.w3.org/2000/svg" width="{}" height="{}" '
        'font-family="monospace" font-size="11">'.format(width, height),
        '<rect width="100%" height="100%" fill="#f8f8f0"/>',
        '<text x="{}" y="20" font-size="14" text-anchor="middle">{}</text>'.format(
            width // 2, html.escape(title)),
    ]
    for node, x, depth, w in rects:
        y = height - 10 - (depth + 1) * frame_h
        pct = 100.0 * node.count / max(root.count, 1)
        label = "{} ({} samples, {:.2f}%)".format(node.name, node.count, pct)
        chars = int((w - 4) / 6.6)
        text = node.name if len(node.name) <= chars else node.name[: max(chars - 2, 0)] + ".."
        out.append('<g><title>{}</title><rect x="{:.1f}" y="{}" width="{:.1f}" height="{}" '
                   'fill="{}" rx="1"/>'.format(html.escape(label), x, y, w, frame_h - 1,
                                              colour(node.name)))
        if chars >= 3:
            out.append('<text x="{:.1f}" y="{}">{}</text>'.format(x + 3, y + frame_h - 4,
                                                                  html.escape(text)))
        out.append("</g>")
    out.append("</svg>")
    return "\n".join(out) + "\n"


def top_paths(stacks, n):
    """The leaf functions with the most samples, each with its share."""
    total = sum(stacks.values()) or 1
    leaves = collections.Counter()
    for stack, count in stacks.items():
        leaves[stack.rsplit(";", 1)[-1]] += count
    return ["{:6.2f}%  {}".format(100.0 * c / total, name) for name, c in leaves.most_common(n)]


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("input", nargs="?", help="perf script output (default: stdin)")
    p.add_argument("--svg", help="write the flame graph here")
    p.add_argument("--folded", action="store_true", help="print folded stacks")
    p.add_argument("--top", type=int, default=0, help="print the N heaviest leaf functions")
    p.add_argument("--title", default="Flame graph")
    p.add_argument("--width", type=int, default=1200)
    p.add_argument("--min-width", type=float, default=0.5, help="pixels (default 0.5)")
    a = p.parse_args()
    if not (a.svg or a.folded or a.top):
        p.error("say what to produce: --svg FILE, --folded or --top N")
    with (open(a.input, errors="replace") if a.input else sys.stdin) as f:
        stacks = fold(f)
    if not stacks:
        sys.exit("flamegraph.py: no call stacks in the input (perf record -g, then perf script)")
    if a.folded:
        for stack, count in sorted(stacks.items()):
            print(stack, count)
    if a.top:
        print("\n".join(top_paths(stacks, a.top)))
    if a.svg:
        with open(a.svg, "w") as f:
            f.write(svg(tree(stacks), a.title, a.width, a.min_width))


if __name__ == "__main__":
    main()
