"""Copy the measured tables of bench/results/*.md into README.md between `<!-- results:NAME -->` and
`<!-- /results:NAME -->` markers, so the README's numbers are generated, never typed."""

from __future__ import annotations

import re

from common import RESULTS, ROOT


def main() -> None:
    readme = ROOT / "README.md"
    text = readme.read_text()
    for md in sorted(RESULTS.glob("*.md")):
        name = md.stem
        pattern = re.compile(rf"(<!-- results:{re.escape(name)} -->\n).*?(<!-- /results:{re.escape(name)} -->)", re.S)
        if pattern.search(text):
            text = pattern.sub(lambda m: m.group(1) + md.read_text().rstrip() + "\n" + m.group(2), text)
            print(f"README: {name} updated")
    readme.write_text(text)


if __name__ == "__main__":
    main()
