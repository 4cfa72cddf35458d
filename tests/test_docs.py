"""The documentation: every relative link in the README and docs/ resolves, every docs page is
reachable from the README, and the README stays a short entry page."""

import re

from tests.conftest import ROOT

LINK = re.compile(r"\]\(([^)]+)\)")


def _pages():
  return [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md")),
          ROOT / "benchmarks" / "RESULTS.md"]


def _anchors(page):
  """The heading anchors a Markdown renderer gives `page` (GitHub's rule: lower case, punctuation
  dropped, spaces to hyphens)."""
  anchors = set()
  for line in page.read_text().splitlines():
    if line.startswith("#"):
      title = line.lstrip("#").strip().lower()
      anchors.add(re.sub(r"[^\w\- ]", "", title).replace(" ", "-"))
  return anchors


def test_every_relative_link_resolves():
  """Files and, where a link names one, the heading anchor within them."""
  broken = []
  for page in _pages():
    for target in LINK.findall(page.read_text()):
      if re.match(r"^[a-z]+://|^mailto:", target):
        continue
      path, _, anchor = target.split(" ")[0].partition("#")
      file = page.parent / path if path else page
      if not file.exists() or (anchor and file.suffix == ".md" and anchor not in _anchors(file)):
        broken.append(f"{page.relative_to(ROOT)} -> {target}")
  assert not broken, broken


def test_every_docs_page_is_linked_from_the_readme_and_it_is_short():
  readme = (ROOT / "README.md").read_text()
  linked = set(LINK.findall(readme))
  missing = [p.name for p in (ROOT / "docs").glob("*.md") if f"docs/{p.name}" not in linked]
  assert not missing, missing
  assert len(readme.splitlines()) <= 220


def test_the_config_field_table_matches_the_schema():
  """docs/configs.md lists every field of config.base_config and no field it lacks (so the table
  cannot drift from the schema)."""
  import fnmatch  # pylint: disable=g-import-not-at-top
  from cvaa_jax import config as config_lib  # pylint: disable=g-import-not-at-top
  fields = [k for k, _ in config_lib._walk(config_lib.base_config())]  # pylint: disable=protected-access
  documented = []
  for line in (ROOT / "docs" / "configs.md").read_text().splitlines():
    if line.startswith("| `") and not line.startswith("| `configs/"):
      documented += re.findall(r"`([a-z0-9_.*]+)`", line.split("|")[1])
  undocumented = [f for f in fields if not any(fnmatch.fnmatch(f, d) for d in documented)]
  unknown = [d for d in documented if not any(fnmatch.fnmatch(f, d) for f in fields)]
  assert not undocumented and not unknown, (undocumented, unknown)


def test_the_python_snippets_in_the_docs_run():
  """Every ```python block of the README and docs/ runs as written, given `volume` (a NIfTI image)
  and `volume_hu` (its voxels): the bundled CT."""
  import nibabel as nib  # pylint: disable=g-import-not-at-top
  import numpy as np  # pylint: disable=g-import-not-at-top
  from cvaa_jax.make_example import BUNDLED_CT  # pylint: disable=g-import-not-at-top
  volume = nib.load(BUNDLED_CT)
  blocks = []
  for page in [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]:
    blocks += [(page.name, b) for b in re.findall(r"```python\n(.*?)```", page.read_text(), re.S)]
  assert blocks
  for name, code in blocks:
    namespace = {"volume": volume, "volume_hu": np.asarray(volume.dataobj, np.float32)}
    exec(compile(code, name, "exec"), namespace)  # pylint: disable=exec-used
