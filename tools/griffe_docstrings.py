"""A griffe extension for the API reference (`make docs`, mkdocs.yml): lmrec's docstrings are plain prose with a
little reStructuredText, rendered here as Markdown.

- Sphinx roles (``:class:`Run` ``, ``:meth:`~Run.load` ``) become code spans (`` `Run` ``);
- a paragraph ending in ``::`` (a literal block follows) ends in ``:`` (``" ::"`` is left out), as in Sphinx;
- a settings field without a docstring, ``name: Annotated[T, Field(..., description="...")] = default``, is
  documented by its description and shown with its type ``T``.
"""

from __future__ import annotations

import ast
import re
from typing import Any

import griffe

ROLE = re.compile(r":(?:py:)?(?:func|meth|class|mod|attr|data|obj|exc|const|type):`~?([^`]+)`")
LITERAL_BLOCK = re.compile(r"(\s?)::\n(?=\n)")


def markdown(text: str) -> str:
    text = ROLE.sub(lambda m: f"`{m.group(1)}`", text)
    return LITERAL_BLOCK.sub(lambda m: "\n" if m.group(1) else ":\n", text)


def field_description(annotation: ast.expr | None) -> str | None:
    """The ``description`` of ``Annotated[T, Field(description=...)]``, else None."""
    if not (isinstance(annotation, ast.Subscript) and isinstance(annotation.slice, ast.Tuple)
            and getattr(annotation.value, "id", getattr(annotation.value, "attr", None)) == "Annotated"):
        return None
    for meta in annotation.slice.elts[1:]:
        if isinstance(meta, ast.Call) and getattr(meta.func, "id", None) == "Field":
            for keyword in meta.keywords:
                if keyword.arg == "description" and isinstance(keyword.value, ast.Constant):
                    return str(keyword.value.value)
    return None


class LmrecDocstrings(griffe.Extension):
    def on_attribute_instance(self, *, node: Any, attr: griffe.Attribute, **kwargs: Any) -> None:
        description = field_description(getattr(node, "annotation", None))
        if description is None or attr.docstring is not None:
            return
        attr.docstring = griffe.Docstring(description, parent=attr)
        annotation = attr.annotation
        if isinstance(annotation, griffe.ExprSubscript) and isinstance(annotation.slice, griffe.ExprTuple):
            attr.annotation = annotation.slice.elements[0]

    def on_package(self, *, pkg: griffe.Module, **kwargs: Any) -> None:
        todo: list[griffe.Object] = [pkg]
        while todo:
            obj = todo.pop()
            if obj.docstring is not None:
                obj.docstring.value = markdown(obj.docstring.value)
            todo.extend(member for member in obj.members.values() if not member.is_alias)
