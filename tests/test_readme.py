"""The README's set-up commands are what CI runs, and the optional FFCV packages stay out of the base install."""
import re

from conftest import ROOT


def setup_commands():
    """The two commands of the README's set-up block, without their comments."""
    block = re.search(r"## Set-up: two commands.*?```bash\n(.*?)```", (ROOT / "README.md").read_text(), re.S)
    return [line.split("#")[0].strip() for line in block.group(1).splitlines() if line.strip()]


def test_the_readme_has_two_setup_commands_and_ci_runs_the_test_command_as_written():
    quickstart, tests = setup_commands()
    assert quickstart.endswith("bash recipes/quickstart/quickstart.sh") and tests.endswith("-m pytest -q")
    assert quickstart.split(" && ")[0] == tests.split(" && ")[0]  # one install for both
    ci = [line.strip() for line in (ROOT / ".ci/run").read_text().splitlines()]
    assert tests in ci and ci[-1] == tests  # the last thing CI does decides its result


def test_ffcv_is_an_optional_extra():
    base = (ROOT / "requirements.txt").read_text().lower()
    extra = (ROOT / "requirements-ffcv.txt").read_text().lower()
    assert "ffcv" not in base and "numba" not in base and re.search(r"^ffcv==", extra, re.M)
    assert "requirements-ffcv.txt" in (ROOT / ".ci/run").read_text()


DOCS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]


def prose(text):
    """The text outside fenced code blocks, line by line (a link or heading inside a code block is not one)."""
    inside = False
    for line in text.splitlines():
        if line.lstrip().startswith("```"):
            inside = not inside
        elif not inside:
            yield line


def anchors(path):
    """The #anchors of a markdown file's headings, as GitHub makes them (repeats get -1, -2, ...)."""
    seen, found = {}, set()
    for line in prose(path.read_text()):
        heading = re.match(r"#{1,6} +(.*?) *#* *$", line)
        if heading:
            slug = re.sub(r"[^\w\- ]", "", heading.group(1).strip().lower()).replace(" ", "-")
            found.add(f"{slug}-{seen[slug]}" if slug in seen else slug)
            seen[slug] = seen.get(slug, 0) + 1
    return found


def test_the_readme_is_short_and_no_line_of_the_docs_is_long():
    assert len((ROOT / "README.md").read_bytes()) <= 10240
    long = [f"{path.relative_to(ROOT)}:{n}: {len(line)} characters"
            for path in DOCS for n, line in enumerate(path.read_text().splitlines(), 1) if len(line) > 120]
    assert not long, "\n".join(long)


def test_every_relative_link_of_the_docs_points_at_a_file_and_heading_that_exist():
    broken = []
    for path in DOCS:
        for line in prose(path.read_text()):
            line = re.sub(r"`[^`]*`", "", line)  # inline code holds no link
            for target in re.findall(r"\]\(([^()\s]+)(?:\s+\"[^\"]*\")?\)", line):
                if re.match(r"[a-z][a-z0-9+.-]*:", target):  # https:, mailto:: not a file of the repository
                    continue
                file, _, anchor = target.partition("#")
                linked = (path.parent / file).resolve() if file else path
                if not linked.exists():
                    broken.append(f"{path.relative_to(ROOT)}: {target}: no such file")
                elif anchor and linked.suffix == ".md" and anchor not in anchors(linked):
                    broken.append(f"{path.relative_to(ROOT)}: {target}: no such heading")
    assert not broken, "\n".join(broken)
