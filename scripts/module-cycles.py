#!/usr/bin/env python3
"""Import cycles between the modules of each workspace crate.

Dependencies between the crates run one way (mta-core <- mta-queue <- mta-smtp <- mta-bin);
this check keeps the modules inside each crate the same way. It prints every cycle with the
files involved and exits 1 if any crate of the workspace has one.

    scripts/module-cycles.py                  check every crate of the workspace (CRATES below)
    scripts/module-cycles.py DIR...           check these source roots (each a crate's src/)
    scripts/module-cycles.py --self-test      the unit tests of this script

The model, which decides what counts:

- A file is a module. `src/lib.rs` or `src/main.rs` is the crate root; `a.rs` and `a/mod.rs`
  are `crate::a`; `a/b.rs` is `crate::a::b`. A module's files are found by following `mod x;`
  declarations from the root (with `#[path = "..."]` honoured), so a file nobody declares is
  not a module. Inline `mod x { ... }` blocks belong to their file's module.
- Test code is left out: a `mod x;` under `#[cfg(test)]` is not followed (so `*_tests.rs`
  files and test directories declared that way are never read), and any item under
  `#[cfg(test)]` (an inline `mod tests { ... }`, a function, a `use`) is cut out of the text
  before it is read. Tests may use anything.
- Comments, string literals and character literals are blanked before reading, so a path
  named in a doc comment or a message is not a dependency.
- A module depends on another when it names it, or an item in it: every path starting with
  `crate::`, `super::` or `self::` (in `use` trees, braces expanded, and in code), and every
  path starting with the name of a child module the file declares (`validate::check(..)` in
  `config.rs`). A path is resolved to the deepest module it passes through: `crate::config::
  Config` names `crate::config`, `crate::config::outbound::X` names `crate::config::outbound`.
- A module naming one of its own ancestors is not an edge: a parent module is where the
  things its children share live (their common types, the facade that re-exports them), and
  children using it is the ordinary shape. The `mod` declaration itself is not an edge either.
  A parent naming its child is an edge, so a child that names a third module which names the
  parent is a cycle.

A cycle is a strongly connected component of more than one module of that graph; each is
printed with its modules, their files and the edges inside it (which file names which).
"""

import os
import re
import sys

# Every crate of the workspace (the source root of each is CRATE/src); none may have a cycle.
CRATES = ["mta-core", "mta-queue", "mta-smtp", "mta-bin", "fuzz", "tests", "bench"]

IDENT = r"[A-Za-z_][A-Za-z0-9_]*"


def blank_literals(text):
    """The text with comments, strings and char literals replaced by spaces (newlines kept)."""
    out = []
    i, n = 0, len(text)

    def blank(s):
        return "".join("\n" if c == "\n" else " " for c in s)

    while i < n:
        c = text[i]
        if text.startswith("//", i):
            j = text.find("\n", i)
            j = n if j < 0 else j
            out.append(blank(text[i:j]))
            i = j
        elif text.startswith("/*", i):
            depth, j = 1, i + 2
            while j < n and depth:
                if text.startswith("/*", j):
                    depth, j = depth + 1, j + 2
                elif text.startswith("*/", j):
                    depth, j = depth - 1, j + 2
                else:
                    j += 1
            out.append(blank(text[i:j]))
            i = j
        else:
            raw = re.match(r'(?:b|c)?r(#*)"', text[i:i + 260]) if c in "bcr" else None
            prev = text[i - 1] if i else " "
            if raw and not (prev.isalnum() or prev == "_"):
                close = '"' + raw.group(1)
                j = text.find(close, i + raw.end())
                j = n if j < 0 else j + len(close)
                out.append(blank(text[i:j]))
                i = j
            elif c == '"' or (c in "bc" and text.startswith('"', i + 1)
                              and not (prev.isalnum() or prev == "_")):
                j = i + (1 if c == '"' else 2)
                while j < n and text[j] != '"':
                    j += 2 if text[j] == "\\" else 1
                out.append(blank(text[i:j + 1]))
                i = j + 1
            elif c == "'":
                # A char literal ('x', '\n', '\u{1F600}', b'x' handled by the quote) or a
                # lifetime ('a, 'static), which has no closing quote right after one char.
                m = re.match(r"'(?:\\(?:u\{[0-9A-Fa-f]+\}|x[0-9A-Fa-f]{2}|.)|[^\\'\n])'",
                             text[i:i + 16])
                if m:
                    out.append(blank(m.group(0)))
                    i += m.end()
                else:
                    out.append(c)
                    i += 1
            else:
                out.append(c)
                i += 1
    return "".join(out)


def matching_brace(text, open_at):
    """The index just past the `}` matching the `{` at open_at (text has no literals)."""
    depth = 0
    for j in range(open_at, len(text)):
        if text[j] == "{":
            depth += 1
        elif text[j] == "}":
            depth -= 1
            if depth == 0:
                return j + 1
    return len(text)


CFG_TEST = re.compile(r"#\s*\[\s*cfg\s*\(\s*(?:all\s*\(\s*)?test\b[^\]]*\]")
ATTR = re.compile(r"\s*#\s*\[[^\]]*\]")


def cut_test_items(text):
    """(text without its #[cfg(test)] items, names of the `mod x;` cut)."""
    test_mods = []
    while True:
        m = CFG_TEST.search(text)
        if not m:
            return text, test_mods
        j = m.end()
        while True:  # further attributes on the same item
            a = ATTR.match(text, j)
            if not a:
                break
            j = a.end()
        end = j
        while end < len(text) and text[end] not in ";{":
            end += 1
        decl = re.match(r"\s*(?:pub(?:\([^)]*\))?\s+)?mod\s+(" + IDENT + r")\s*;", text[j:end + 1])
        if decl:
            test_mods.append(decl.group(1))
        end = end + 1 if end >= len(text) or text[end] == ";" else matching_brace(text, end)
        text = text[:m.start()] + re.sub(r"[^\n]", " ", text[m.start():end]) + text[end:]


MOD_DECL = re.compile(
    r"((?:#\s*\[[^\]]*\]\s*)*)(?:pub(?:\([^)]*\))?\s+)?mod\s+(" + IDENT + r")\s*;")


class Module:
    def __init__(self, path, file):
        self.path = path  # ("config", "outbound"); () is the crate root
        self.file = file
        self.code = ""
        self.children = []


def load_crate(src):
    """{module path: Module} of the crate whose source root is `src`."""
    root = next((os.path.join(src, f) for f in ("lib.rs", "main.rs")
                 if os.path.exists(os.path.join(src, f))), None)
    modules = {}
    if root is None:
        return modules
    todo = [((), root)]
    while todo:
        path, file = todo.pop()
        mod = Module(path, file)
        modules[path] = mod
        with open(file, encoding="utf-8") as f:
            mod.code, _ = cut_test_items(blank_literals(f.read()))
        base = os.path.basename(file)
        owns_dir = base in ("lib.rs", "main.rs", "mod.rs")
        here = os.path.dirname(file)
        child_dir = here if owns_dir else os.path.join(here, base[:-3])
        for m in MOD_DECL.finditer(mod.code):
            attrs, name = m.group(1), m.group(2)
            # #[path] is read from the raw attribute text: blank_literals blanked its string.
            with open(file, encoding="utf-8") as f:
                raw = f.read()[m.start():m.end()]
            p = re.search(r'#\s*\[\s*path\s*=\s*"([^"]+)"', raw)
            if p:
                child = os.path.join(here, p.group(1))
            else:
                child = os.path.join(child_dir, name + ".rs")
                if not os.path.exists(child):
                    child = os.path.join(child_dir, name, "mod.rs")
            if os.path.exists(child):
                mod.children.append(name)
                todo.append((path + (name,), child))
    return modules


def use_tree_paths(code, start):
    """The paths of the use tree / path starting at `start`: [(segments, end)]."""
    paths = []

    def parse(i, prefix):
        segs = list(prefix)
        while True:
            m = re.compile(r"\s*(" + IDENT + r"|\{)").match(code, i)
            if not m:
                paths.append(segs)
                return i
            if m.group(1) == "{":
                i = m.end()
                while True:
                    i = parse(i, segs)
                    sep = re.compile(r"\s*(,|\})").match(code, i)
                    if not sep:
                        return i
                    i = sep.end()
                    if sep.group(1) == "}":
                        return i
                    if re.compile(r"\s*\}").match(code, i):
                        return re.compile(r"\s*\}").match(code, i).end()
            segs.append(m.group(1))
            i = m.end()
            nxt = re.compile(r"\s*::").match(code, i)
            if not nxt:
                paths.append(segs)
                return i
            i = nxt.end()

    parse(start, [])
    return paths


PATH_START = re.compile(r"(?<![A-Za-z0-9_:$])(" + IDENT + r")\s*::")


def resolve(modules, current, segs):
    """The module a path written in `current` names, or None (an external crate, a local)."""
    if not segs:
        return None
    if segs[0] == "crate":
        base, rest = (), segs[1:]
    elif segs[0] in ("super", "self"):
        base, rest = current, segs
        while rest and rest[0] in ("super", "self"):
            base = base[:-1] if rest[0] == "super" else base
            rest = rest[1:]
    elif segs[0] in modules[current].children:
        base, rest = current, segs
    else:
        return None
    target = base
    for s in rest:
        if target + (s,) in modules:
            target = target + (s,)
        else:
            break
    return target


def edges_of(modules):
    """{(from, to): module path} of every dependency counted by the model above."""
    edges = {}
    for path, mod in modules.items():
        for m in PATH_START.finditer(mod.code):
            first = m.group(1)
            if first not in ("crate", "super", "self") and first not in mod.children:
                continue
            for segs in use_tree_paths(mod.code, m.start(1)):
                to = resolve(modules, path, segs)
                if to is None or to == path or path[:len(to)] == to:
                    continue  # itself, or one of its ancestors
                edges.setdefault((path, to), "::".join(segs).removesuffix("::self"))
    return edges


def cycles(modules, edges):
    """The strongly connected components of more than one module (Tarjan), each sorted."""
    graph = {p: sorted(t for (f, t) in edges if f == p) for p in modules}
    index, low, stack, on, out = {}, {}, [], set(), []
    counter = [0]

    def visit(v):
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on.add(v)
        for w in graph[v]:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                out.append(sorted(comp))

    sys.setrecursionlimit(10000)
    for v in sorted(modules):
        if v not in index:
            visit(v)
    return sorted(out)


def name(path):
    return "crate::" + "::".join(path) if path else "crate"


def check(src, label):
    """Print the cycles of one crate; their number."""
    modules = load_crate(src)
    edges = edges_of(modules)
    found = cycles(modules, edges)
    for comp in found:
        print(f"{label}: cycle between {len(comp)} modules:")
        for p in comp:
            print(f"  {name(p)}  ({modules[p].file})")
        for (f, t), via in sorted(edges.items()):
            if f in comp and t in comp:
                print(f"    {name(f)} -> {name(t)}  (names {via} in {modules[f].file})")
    return len(found)


def self_test():
    import tempfile
    import textwrap

    def tree(files):
        d = tempfile.mkdtemp(prefix="module-cycles-")
        for rel, body in files.items():
            p = os.path.join(d, rel)
            os.makedirs(os.path.dirname(p), exist_ok=True)
            with open(p, "w", encoding="utf-8") as f:
                f.write(textwrap.dedent(body))
        return d

    def found(files):
        d = tree(files)
        try:
            return [[name(p) for p in c] for c in cycles(*(lambda m: (m, edges_of(m)))(load_crate(d)))]
        finally:
            import shutil
            shutil.rmtree(d)

    failures = []

    def expect(what, files, want):
        got = found(files)
        if got != want:
            failures.append(f"{what}: got {got}, want {want}")

    root = "mod a;\nmod b;\nmod c;\n"
    expect("a two-module cycle through use", {
        "lib.rs": root, "a.rs": "use crate::b::Thing;\n", "b.rs": "use super::a;\n", "c.rs": ""},
        [["crate::a", "crate::b"]])
    expect("a cycle through a brace use tree and a path in code", {
        "lib.rs": root,
        "a.rs": "use crate::{c, b::{x, y}};\n",
        "b.rs": "fn f() { crate::c::run(); }\n",
        "c.rs": "fn g() -> super::a::T { todo!() }\n"},
        [["crate::a", "crate::b", "crate::c"]])
    expect("no cycle from a comment, a doc comment, a string or a char", {
        "lib.rs": root,
        "a.rs": "use crate::b::Thing;\n",
        "b.rs": textwrap.dedent("""\
            // use crate::a::X;
            /// See crate::a::X.
            /* crate::a::Y /* nested */ crate::a::Z */
            const S: &str = "crate::a::Q";
            const R: &str = r#"crate::a::Q "still" "#;
            const C: char = '"';
            fn f<'a>(x: &'a str) -> &'a str { x }
            """),
        "c.rs": ""},
        [])
    expect("no cycle from test code", {
        "lib.rs": root,
        "a.rs": "use crate::b::Thing;\n",
        "b.rs": textwrap.dedent("""\
            #[cfg(test)]
            use crate::a::X;
            #[cfg(test)]
            mod tests {
                use crate::a::Y;
                fn t() { let s = "}"; crate::a::z(); }
            }
            #[cfg(test)]
            #[path = "b_tests.rs"]
            mod more;
            """),
        "b_tests.rs": "use crate::a::W;\n",
        "c.rs": ""},
        [])
    expect("a child naming its parent is no edge; a nested module is found", {
        "lib.rs": "mod p;\n",
        "p/mod.rs": "mod x;\nmod y;\npub struct Shared;\nfn f() { x::go(); y::go(); }\n",
        "p/x.rs": "use super::Shared;\npub fn go() {}\n",
        "p/y.rs": "use super::{Shared, x};\npub fn go() {}\n"},
        [])
    expect("a sibling cycle under a directory module, named relative to the parent", {
        "lib.rs": "mod p;\n",
        "p/mod.rs": "mod x;\nmod y;\n",
        "p/x.rs": "use super::y::B;\n",
        "p/y.rs": "fn f() { super::x::go(); }\n"},
        [["crate::p::x", "crate::p::y"]])
    expect("a cycle that passes through a parent naming its child", {
        "lib.rs": "mod p;\nmod q;\n",
        "p.rs": "mod x;\npub use x::Thing;\n",
        "p/x.rs": "use crate::q::Q;\n",
        "q.rs": "use crate::p::Thing;\n"},
        [["crate::p", "crate::p::x", "crate::q"]])
    # blank_literals against a reference model on random input: text made of pieces each
    # known to be code (kept) or a comment/literal (blanked, newlines kept), separated by
    # spaces as Rust's tokens would be.
    import random
    code = ["crate::a::b", "super::x", "fn f<'a>(x: &'a str) -> &'static str", "{", "}",
            "x", "\n", "let c = b;", "#[cfg(test)]", "'a"]
    literal = ["// c crate::a \" ' */\n", "/* a /* crate::b */ c \n */", '"s \\" crate::a"',
               'r#"x " crate::y"#', "'x'", "'\\n'", "'\"'", 'b"q\\""', "'\\u{1F600}'",
               "/// doc crate::a\n", '"multi\nline"', "'/'", "'\\''"]
    rng = random.Random(7)
    wrong = 0
    for _ in range(3000):
        pieces = [(p in code, p) for p in (rng.choice(code + literal) for _ in range(rng.randint(1, 12)))]
        text = " ".join(p for _, p in pieces)
        want = " ".join(p if is_code else re.sub(r"[^\n]", " ", p) for is_code, p in pieces)
        if blank_literals(text) != want:
            wrong += 1
            if wrong <= 3:
                failures.append(f"blank_literals model: {text!r} gave {blank_literals(text)!r}, want {want!r}")
    for f in failures:
        print("FAIL", f)
    failed = len({f.split(":")[0] for f in failures})
    print(f"module-cycles self-test: {8 - failed} passed, {failed} failed")
    return 1 if failures else 0


def main(argv):
    if argv == ["--self-test"]:
        return self_test()
    here = os.path.relpath(os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
    if argv:
        return 1 if sum(check(d, d) for d in argv) else 0
    status = 0
    for crate in CRATES:
        n = check(os.path.join(here, crate, "src"), crate)
        print(f"{crate}: {n} cycle(s)")
        if n:
            status = 1
    return status


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
