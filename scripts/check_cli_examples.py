#!/usr/bin/env python3
"""Check that every public Salt function of the bundle documents how to call it.

Usage::

    python scripts/check_cli_examples.py            # the repository this script is in
    python scripts/check_cli_examples.py ROOT...    # other repository roots, or single files

The rule, per Salt module directory (files are parsed with ``ast``, never imported):

``_modules/*.py`` and ``_runners/*.py``
    Every public function (no leading underscore) has a docstring with a ``CLI Example:``
    line followed by a non-empty ``.. code-block:: bash`` block, as in Salt's own modules.

``_states/*.py``
    State functions are not called from the command line but written in SLS files: every
    public function has a docstring with a non-empty ``.. code-block:: yaml`` block (an SLS
    example); a ``CLI Example:`` line is not needed.

Names are reported as Salt users call them: ``__virtualname__`` (default: the file name) and
``__func_alias__`` (``list_`` is reported as ``virt.list``). Exit status: 0 when every
function is documented, 1 when some are not (each is listed), 2 for a usage error.
"""

import ast
import inspect
import os
import re
import sys

#: Salt module directory -> what each public function's docstring needs.
RULES = {
    "_modules": "cli",
    "_runners": "cli",
    "_states": "sls",
}

_CLI_HEADER = re.compile(r"^\s*CLI Examples?:\s*$")
_CODE_BLOCK = re.compile(r"^(\s*)\.\. code-block::\s*(\S+)\s*$")


def _indent(line):
    return len(line) - len(line.lstrip())


def _code_block(lines, index, language):
    """True if ``lines[index]`` opens a ``code-block`` of ``language`` with some content."""
    match = _CODE_BLOCK.match(lines[index])
    if not match or match.group(2) != language:
        return False
    base = len(match.group(1))
    for line in lines[index + 1:]:
        if not line.strip():
            continue
        if _indent(line) <= base:
            return False  # the block ended before any content
        if not line.strip().startswith(":"):  # skip directive options such as :linenos:
            return True
    return False


def problems_in_doc(doc, rule):
    """What is missing in one function's docstring under ``rule`` (``[]``: nothing)."""
    if not doc:
        return ["no docstring"]
    lines = inspect.cleandoc(doc).splitlines()
    if rule == "sls":
        if any(_code_block(lines, i, "yaml") for i in range(len(lines))):
            return []
        return ["no SLS example (.. code-block:: yaml)"]
    headers = [i for i, line in enumerate(lines) if _CLI_HEADER.match(line)]
    if not headers:
        return ["no 'CLI Example:'"]
    for i in headers:
        following = [j for j in range(i + 1, len(lines)) if lines[j].strip()]
        if following and _code_block(lines, following[0], "bash"):
            return []
    return ["'CLI Example:' is not followed by a .. code-block:: bash with commands"]


def check_file(path, rule):
    """``[(line, name, problem)]`` of the public functions in ``path`` that break ``rule``."""
    with open(path, encoding="utf-8") as fh:
        source = fh.read()
    try:
        tree = ast.parse(source, filename=path)
    except SyntaxError as exc:
        return [(exc.lineno or 0, "<module>", f"cannot parse: {exc.msg}")]
    virtualname = os.path.splitext(os.path.basename(path))[0]
    aliases = {}
    for node in tree.body:
        if isinstance(node, ast.Assign):
            names = [t.id for t in node.targets if isinstance(t, ast.Name)]
            if "__virtualname__" in names and isinstance(node.value, ast.Constant):
                virtualname = node.value.value
            elif "__func_alias__" in names:
                try:
                    aliases = ast.literal_eval(node.value)
                except ValueError:
                    return [(node.lineno, "__func_alias__", "not a literal dict")]
    found = []
    for node in tree.body:
        if not isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)) or node.name.startswith("_"):
            continue
        name = f"{virtualname}.{aliases.get(node.name, node.name)}"
        if node.name in aliases:
            name += f" ({node.name})"
        for problem in problems_in_doc(ast.get_docstring(node, clean=False), rule):
            found.append((node.lineno, name, problem))
    return found


def rule_for(path):
    """The rule for a file, from the Salt module directory it is in (``None``: not checked)."""
    return RULES.get(os.path.basename(os.path.dirname(os.path.abspath(path))))


def files_under(root):
    """The Salt entry-point files of a repository root, sorted."""
    found = []
    for directory in RULES:
        folder = os.path.join(root, directory)
        if os.path.isdir(folder):
            found += [os.path.join(folder, f) for f in sorted(os.listdir(folder))
                      if f.endswith(".py") and not f.startswith(".")]
    return found


def main(argv=None):
    args = sys.argv[1:] if argv is None else list(argv)
    if any(a in ("-h", "--help") for a in args):
        print(__doc__.strip())
        return 0
    if not args:
        args = [os.path.dirname(os.path.dirname(os.path.abspath(__file__)))]
    files = []
    for arg in args:
        if os.path.isdir(arg):
            files += files_under(arg)
        elif os.path.isfile(arg) and rule_for(arg):
            files.append(arg)
        else:
            print(f"check_cli_examples: {arg}: not a repository root nor a file in "
                  f"{', '.join(RULES)}", file=sys.stderr)
            return 2
    if not files:
        print(f"check_cli_examples: no Salt module files found in {', '.join(args)}", file=sys.stderr)
        return 2
    findings = 0
    for path in files:
        for line, name, problem in check_file(path, rule_for(path)):
            print(f"{os.path.relpath(path)}:{line}: {name}: {problem}")
            findings += 1
    if findings:
        print(f"check_cli_examples: {findings} public function(s) without an example "
              f"in {len(files)} file(s)", file=sys.stderr)
        return 1
    print(f"check_cli_examples: every public function has its example ({len(files)} files)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
