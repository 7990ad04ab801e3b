"""Each page of the book loads each of its scripts once.

Sphinx 7.4 adds an inline script registered after its HTML builder starts (sphinx-thebe's and
sphinx-togglebutton's settings) twice: once under the file name ``None`` and once under ``''``, which it
does not see as the same. The second copy of ``const THEBE_JS_URL = ...`` is a ``SyntaxError``
("Identifier 'THEBE_JS_URL' has already been declared") in the reader's browser console on every page (the
browser test checks that no page logs an error). Each page keeps the first copy of each script.
"""

from __future__ import annotations


def _scripts_once(app, pagename, templatename, context, doctree) -> None:
    scripts = context.get("script_files")
    if not scripts:
        return
    seen, kept = set(), []
    for script in scripts:
        filename = getattr(script, "filename", script) or ""
        key = (filename, getattr(script, "priority", None), repr(getattr(script, "attributes", None)))
        if key not in seen:
            seen.add(key)
            kept.append(script)
    context["script_files"] = kept


def setup(app):
    app.connect("html-page-context", _scripts_once)
    return {"parallel_read_safe": True, "parallel_write_safe": True}
