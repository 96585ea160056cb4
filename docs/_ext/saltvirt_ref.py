"""Sphinx extension: reference pages of salt-virt's Salt modules, read from their source.

The Salt modules cannot be imported here (they need Salt's loader dunders such as
``__salt__`` and libvirt-python), so each file is parsed with :mod:`ast` instead. Usage::

    .. saltvirt-functions:: _modules/virt.py

The path is relative to the repository root (the ``saltvirt_root`` setting of ``conf.py``).
The directive emits the module docstring (unless ``:no-module-doc:`` is given), then one
``py:function`` entry per public function, named as Salt users call it: the module's
``__virtualname__`` (or the file name) and the function's ``__func_alias__`` name, e.g.
``virt.list`` for ``list_`` in ``_runners/virt.py``. Each entry carries the function's
signature and its docstring (Salt's reST style). Inside a docstring, ``:func:`name``` of a
public function of the same file points to that function's entry.

Entries live under the Python package the wheel installs the directory as
(``saltvirt.ext.modules``, ``saltvirt.ext.runners``...), so that the execution module's
``virt.init`` and the runner's ``virt.init`` are distinct objects for Sphinx.
"""

import ast
import inspect
import os
import re

from docutils import nodes
from docutils.parsers.rst import directives
from docutils.statemachine import StringList
from sphinx.util.docutils import SphinxDirective
from sphinx.util.nodes import nested_parse_with_titles

__version__ = "1.0"

#: Salt's loader directory -> the package ``setup.cfg`` installs it as.
PACKAGES = {
    "_modules": "saltvirt.ext.modules",
    "_runners": "saltvirt.ext.runners",
    "_states": "saltvirt.ext.states",
    "_pillar": "saltvirt.ext.pillar",
    "_grains": "saltvirt.ext.grains",
    "_output": "saltvirt.ext.output",
}

INDENT = "   "


class SaltFunction:
    """One public function of a Salt module, as the loader exposes it."""

    def __init__(self, name, public_name, signature, doc, doc_line):
        self.name = name  # as defined in the file, e.g. ``list_``
        self.public_name = public_name  # as called, e.g. ``list``
        self.signature = signature
        self.doc = doc  # cleaned docstring, or ""
        self.doc_line = doc_line  # 0-based line of ``doc``'s first line in the file


class SaltModule:
    """What the reference needs of one Salt module file, found with :mod:`ast`."""

    def __init__(self, path):
        self.path = path
        with open(path, encoding="utf-8") as fh:
            source = fh.read()
        tree = ast.parse(source, filename=path)
        self.virtualname = os.path.splitext(os.path.basename(path))[0]
        aliases = {}
        for node in tree.body:
            for target, value in _assignments(node):
                if target == "__virtualname__" and isinstance(value, ast.Constant):
                    self.virtualname = value.value
                elif target == "__func_alias__":
                    aliases = ast.literal_eval(value)
        self.doc, self.doc_line = _docstring(tree)
        self.functions = []
        for node in tree.body:
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)) and not node.name.startswith("_"):
                doc, doc_line = _docstring(node)
                self.functions.append(SaltFunction(
                    node.name, aliases.get(node.name, node.name), ast.unparse(node.args), doc, doc_line,
                ))


def _assignments(node):
    """``(name, value node)`` of a module-level ``name = value`` or ``name: type = value``."""
    if isinstance(node, ast.Assign):
        for target in node.targets:
            if isinstance(target, ast.Name):
                yield target.id, node.value
    elif isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name) and node.value:
        yield node.target.id, node.value


def _docstring(node):
    """The cleaned docstring of ``node`` and the 0-based file line of its first line."""
    body = getattr(node, "body", None)
    if not body or not isinstance(body[0], ast.Expr):
        return "", 0
    value = body[0].value
    if not (isinstance(value, ast.Constant) and isinstance(value.value, str)):
        return "", 0
    raw = value.value.expandtabs().split("\n")
    skipped = 0
    while skipped < len(raw) - 1 and not raw[skipped].strip():
        skipped += 1
    return inspect.cleandoc(value.value), value.lineno - 1 + skipped


class SaltFunctionsDirective(SphinxDirective):
    """``.. saltvirt-functions:: <file>``: see the module docstring."""

    required_arguments = 1
    has_content = False
    option_spec = {"no-module-doc": directives.flag}

    def run(self):
        relpath = self.arguments[0]
        root = self.config.saltvirt_root or os.path.dirname(self.env.srcdir)
        path = os.path.join(root, relpath)
        package = PACKAGES.get(os.path.basename(os.path.dirname(os.path.normpath(relpath))))
        if package is None:
            raise self.error(f"{relpath}: not in a Salt module directory ({', '.join(PACKAGES)})")
        try:
            module = SaltModule(path)
        except (OSError, SyntaxError, ValueError) as exc:
            raise self.error(f"{relpath}: {exc}") from exc
        self.env.note_dependency(path)

        lines = StringList()
        here = (self.env.docname, self.lineno)

        def add(text, source=None, offset=None):
            if source is None:
                lines.append(text, *here)
            else:
                lines.append(text, source, offset)

        add(f".. py:currentmodule:: {package}")
        add("")
        public = {f.name: f"{module.virtualname}.{f.public_name}" for f in module.functions}
        if module.doc and "no-module-doc" not in self.options:
            for i, line in enumerate(_link_local_refs(_join_wrapped_terms(module.doc), public).split("\n")):
                add(line, path, module.doc_line + i)
            add("")
        for func in module.functions:
            add(f".. py:function:: {module.virtualname}.{func.public_name}({func.signature})")
            add("")
            doc = _link_local_refs(_join_wrapped_terms(func.doc), public) if func.doc else ""
            for i, line in enumerate(doc.split("\n") if doc else []):
                add(INDENT + line if line else "", path, func.doc_line + i)
            add("")

        # As autodoc does: parse into a section, so that a docstring may hold titles.
        container = nodes.section()
        container.document = self.state.document
        nested_parse_with_titles(self.state, lines, container)
        return container.children


def _indent(line):
    return len(line) - len(line.lstrip())


def _join_wrapped_terms(doc):
    """Join a definition-list term that a docstring wrapped over several lines.

    Salt docstrings describe arguments as definition lists (``name`` and an indented
    description). A term too long for one line, e.g. a list of argument names, is wrapped at
    the same indentation; reST allows one line per term and reports "Unexpected indentation".
    A paragraph directly followed by a more indented line is an error in reST anyway, so
    such a paragraph is joined into one line. Literal blocks (after ``::`` or a directive)
    are left as they are.
    """
    lines = doc.split("\n")
    out = []
    literal = None  # indentation of the line that opened a literal block / directive
    i = 0
    while i < len(lines):
        line = lines[i]
        if not line.strip():
            out.append(line)
            i += 1
            continue
        indent = _indent(line)
        if literal is not None and indent > literal:
            out.append(line)
            i += 1
            continue
        literal = None
        # A run of lines at this indentation.
        j = i
        while j + 1 < len(lines) and lines[j + 1].strip() and _indent(lines[j + 1]) == indent:
            j += 1
        run = lines[i:j + 1]
        # After a blank line, or after the indented definition of a previous term.
        starts_block = not out or not out[-1].strip() or _indent(out[-1]) > indent
        followed_deeper = j + 1 < len(lines) and lines[j + 1].strip() and _indent(lines[j + 1]) > indent
        markup = any(r.lstrip().startswith(("..", "- ", "* ", ":", "|")) or r.rstrip().endswith("::")
                     for r in run)
        if len(run) > 1 and starts_block and followed_deeper and not markup:
            out.append(" " * indent + " ".join(r.strip() for r in run))
        else:
            out.extend(run)
        last = run[-1].strip()
        if last.startswith("..") or last.endswith("::"):
            literal = _indent(run[-1])
        i = j + 1
    return "\n".join(out)


_FUNC_REF = re.compile(r":func:`(~?)([A-Za-z_][A-Za-z0-9_]*)`")


def _link_local_refs(doc, public):
    """``:func:`name``` of a public function of the same module -> its entry's full name."""
    def repl(match):
        tilde, name = match.groups()
        if name in public:
            return f":func:`{tilde}{public[name]}`"
        return match.group(0)

    return _FUNC_REF.sub(repl, doc)


def setup(app):
    app.add_config_value("saltvirt_root", "", "env")
    app.add_directive("saltvirt-functions", SaltFunctionsDirective)
    return {"version": __version__, "parallel_read_safe": True, "parallel_write_safe": True}
