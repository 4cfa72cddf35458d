"""The documentation: every relative link in the README and docs/ resolves, every docs page is
reachable from the README, and the README stays a short entry page."""

import re

from tests.conftest import ROOT

LINK = re.compile(r"\]\(([^)]+)\)")


def _pages():
  return [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md")),
          ROOT / "benchmarks" / "RESULTS.md"]


def test_every_relative_link_resolves():
  broken = []
  for page in _pages():
    for target in LINK.findall(page.read_text()):
      if re.match(r"^[a-z]+://|^mailto:|^#", target):
        continue
      path = target.split("#")[0].split(" ")[0]
      if not (page.parent / path).exists():
        broken.append(f"{page.relative_to(ROOT)} -> {target}")
  assert not broken, broken


def test_every_docs_page_is_linked_from_the_readme_and_it_is_short():
  readme = (ROOT / "README.md").read_text()
  linked = set(LINK.findall(readme))
  missing = [p.name for p in (ROOT / "docs").glob("*.md") if f"docs/{p.name}" not in linked]
  assert not missing, missing
  assert len(readme.splitlines()) <= 220
