"""axe-core, the accessibility engine (``axe-core`` from the npm registry, pinned in
``tests/axe/package-lock.json``), run inside a Playwright page.

``assert_no_axe_violations(page)`` checks the page as it is now against the WCAG 2.0, 2.1
and 2.2 A and AA rules and fails with each violation's rule, impact and elements.

axe is put into the page with ``page.evaluate`` (its source, as ``@axe-core/playwright``
does) rather than ``page.add_script_tag``: a script tag is an inline script, which the
inbox's Content-Security-Policy refuses (the tests keep the policy on, as browsers see it).

``.ci/run`` installs axe-core (``npm ci`` in ``tests/axe``); without it the tests that need
it skip, or fail where ``VOICEMAIL_TEST_SERVICES=required``.
"""

from __future__ import annotations

from functools import cache
from pathlib import Path
from typing import Any

from tests.services import unavailable

AXE_DIR = Path(__file__).resolve().parents[1] / "axe"
AXE_JS = AXE_DIR / "node_modules" / "axe-core" / "axe.min.js"
# WCAG 2.2 AA, which includes 2.1 and 2.0 A and AA (axe tags each rule with the version
# that added it).
WCAG_TAGS = ("wcag2a", "wcag2aa", "wcag21a", "wcag21aa", "wcag22aa")

_RUN = """async ([tags, include]) => {
    const results = await axe.run(include ? {include: [include]} : document, {
        runOnly: {type: "tag", values: tags},
        resultTypes: ["violations"],
    });
    return results.violations.map(v => ({
        id: v.id, impact: v.impact, help: v.help,
        nodes: v.nodes.map(n => ({target: n.target.join(" "), summary: n.failureSummary})),
    }));
}"""


def require_axe() -> None:
    """Skip (or fail, under VOICEMAIL_TEST_SERVICES=required) when axe-core is missing."""
    if not AXE_JS.is_file():
        unavailable(f"axe-core is not installed: run `npm ci` in {AXE_DIR}")


@cache
def _axe_source() -> str:
    return AXE_JS.read_text(encoding="utf-8")


def axe_violations(page: Any, *, selector: str | None = None) -> list[dict[str, Any]]:
    """axe's WCAG 2.2 A/AA violations of the page (or of ``selector``'s part of it)."""
    require_axe()
    if not page.evaluate("() => typeof window.axe === 'object'"):
        page.evaluate(_axe_source())
    violations: list[dict[str, Any]] = page.evaluate(_RUN, [list(WCAG_TAGS), selector])
    return violations


def format_violations(violations: list[dict[str, Any]]) -> str:
    lines = []
    for violation in violations:
        lines.append(f"{violation['id']} ({violation['impact']}): {violation['help']}")
        lines.extend(
            f"    {node['target']}: {' '.join((node['summary'] or '').split())}"
            for node in violation["nodes"]
        )
    return "\n".join(lines)


def assert_no_axe_violations(page: Any, *, selector: str | None = None) -> None:
    """Fail with axe's report when the page, as it is now, breaks a WCAG 2.2 A/AA rule."""
    violations = axe_violations(page, selector=selector)
    assert not violations, f"axe-core on {page.url}:\n{format_violations(violations)}"
