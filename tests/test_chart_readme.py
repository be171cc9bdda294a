"""charts/flashsale/README.md is what k8s/chart_readme.py renders from the chart, its table has a
row for every value of values.yaml, and the generator refuses a values.yaml that does not
document itself."""

from __future__ import annotations

import fnmatch
import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from k8s import chart_readme
from k8s.chart_readme import CHART, ValuesError, document

REPO_ROOT = CHART.parents[1]

ROW = re.compile(r"^\| `(?P<key>[^`]+)` \| (?P<type>[^|]+) \| (?P<default>.*?) \| (?P<description>.*) \|$")


def _readme_rows() -> dict[str, dict[str, str]]:
    rows = {}
    for line in (CHART / "README.md").read_text().splitlines():
        if match := ROW.match(line):
            rows[match["key"]] = match.groupdict()
    return rows


def _paths(value: object, prefix: str = "") -> dict[str, object]:
    """Every dotted path of values.yaml, maps included, with its default."""
    found: dict[str, object] = {}
    if isinstance(value, dict):
        for key, child in value.items():
            dotted = f"{prefix}.{key}" if prefix else str(key)
            found[dotted] = child
            found |= _paths(child, dotted)
    return found


def test_readme_is_what_the_generator_renders():
    expected = chart_readme.render()
    assert (CHART / "README.md").read_text() == expected, (
        "charts/flashsale/README.md is stale: run `make chart-readme`"
    )


def test_check_mode_passes_from_the_repository_root():
    done = subprocess.run(
        [sys.executable, "-m", "k8s.chart_readme", "--check"], cwd=REPO_ROOT, capture_output=True, text=True
    )
    assert done.returncode == 0, done.stderr


def test_every_value_of_values_yaml_has_its_row_with_its_default():
    rows = _readme_rows()
    paths = _paths(yaml.safe_load((CHART / "values.yaml").read_text()))
    for path, default in paths.items():
        if path in rows:
            if rows[path]["default"]:  # a value (a group's row has no default)
                cell = rows[path]["default"].replace("\\|", "|").strip("`")
                assert json.loads(cell) == default, path
            continue
        # A key inside a map documented whole (resources.requests.cpu), or a group of rows.
        inside_a_value = any(path.startswith(f"{row}.") and rows[row]["default"] for row in rows)
        a_group = any(row.startswith(f"{path}.") for row in rows)
        assert inside_a_value or (a_group and isinstance(default, dict) and default), path
    assert set(rows) <= set(paths)
    assert "api.keepAliveSeconds" in rows


def test_types_come_from_the_schema():
    rows = _readme_rows()
    assert rows["api.pdb.maxUnavailable"]["type"] == "integer or string"  # "type": [...]
    assert rows["config.logLevel"]["type"] == "string"  # an enum of strings
    assert rows["config.rateRefillPerSec"]["type"] == "number"  # the default, 1, is an integer
    assert rows["api.resources"]["type"] == "object"


def test_readme_links_resolve_in_the_repository():
    text = (CHART / "README.md").read_text()
    links = re.findall(r"\]\(([^)\s]+)\)", text)
    local = [link for link in links if not re.match(r"[a-z]+://", link)]
    assert "../../README.md" in local
    for link in local:
        assert (CHART / link.split("#")[0]).exists(), link


def test_the_template_does_not_ship_in_the_chart_package():
    patterns = [
        line.strip()
        for line in (CHART / ".helmignore").read_text().splitlines()
        if line.strip() and not line.startswith("#")
    ]
    assert any(fnmatch.fnmatch(chart_readme.TEMPLATE_NAME, p) for p in patterns)
    assert not any(fnmatch.fnmatch("README.md", p) for p in patterns)


# The generator on small values files --------------------------------------------------------


def _problems(values: str) -> list[str]:
    with pytest.raises(ValuesError) as raised:
        document(values)
    return raised.value.problems


def test_leaves_lists_and_maps_documented_whole_are_one_row_each():
    rows = document(
        "# a file note, not a value's comment\n"
        "\n"
        "api:\n"
        "  # api.port is the port.\n"
        "  port: 8000\n"
        "  # api.resources are the requests\n"
        "  # and limits.\n"
        "  resources:\n"
        "    requests: {cpu: 1m}\n"
        "  # api.extraEnv: NAME: value.\n"
        "  extraEnv: {}\n"
        "# trusted, a list.\n"
        'trusted: ["10.0.0.0/8"]\n',
        {"properties": {"api": {"properties": {"port": {"type": ["integer", "string"]}}}}},
    )
    assert [(r.key, r.type, r.default, r.description) for r in rows] == [
        ("api.port", "integer or string", "8000", "api.port is the port."),
        (
            "api.resources",
            "object",
            '{"requests":{"cpu":"1m"}}',
            "api.resources are the requests and limits.",
        ),
        ("api.extraEnv", "object", "{}", "api.extraEnv: NAME: value."),
        ("trusted", "array", '["10.0.0.0/8"]', "trusted, a list."),
    ]


def test_a_group_comment_is_a_row_without_a_default():
    rows = document("# config holds the settings.\nconfig:\n  # config.level is the level.\n  level: INFO\n")
    assert [(r.key, r.default) for r in rows] == [("config", ""), ("config.level", '"INFO"')]


def test_a_value_without_a_comment_is_reported_with_its_line():
    problems = _problems("api:\n  # api.port is the port.\n  port: 8000\n  keepAliveSeconds: 100\n")
    assert problems == [
        "values.yaml:4: api.keepAliveSeconds has no comment: add one above it, starting with "
        "'api.keepAliveSeconds'"
    ]


def test_a_map_without_any_comment_is_one_undocumented_value():
    problems = _problems("# port is the port.\nport: 1\nresources:\n  requests: {cpu: 1m}\n")
    assert len(problems) == 1 and "resources has no comment" in problems[0]


def test_a_comment_naming_a_path_that_does_not_exist_is_reported():
    problems = _problems("api:\n  # api.prot is the port.\n  port: 8000\n")
    assert problems == [
        "values.yaml:2: the comment above api.port starts with 'api.prot'; it must start with 'api.port'"
    ]


def test_a_comment_above_the_wrong_key_is_reported():
    # The old capabilities.apiVersions layout: the leaf's comment above its parent.
    problems = _problems("# capabilities.apiVersions are served.\ncapabilities:\n  apiVersions: []\n")
    assert problems == [
        "values.yaml:1: the comment above capabilities starts with 'capabilities.apiVersions'; "
        "it must start with 'capabilities'"
    ]


def test_a_comment_that_floats_away_from_its_value_is_reported():
    problems = _problems(
        "# api.port is the port.\n\napi:\n  port: 8000\n# api.gone was removed.\n\nother: 1\n"
    )
    assert "values.yaml:1: the comment for api.port is not directly above it" in problems
    assert "values.yaml:5: the comment for api.gone names no value in values.yaml" in problems
    assert any("values.yaml:3: api has no comment" in p for p in problems)
    assert any("other has no comment" in p for p in problems)


def test_table_cells_keep_pipes_html_and_emphasis_literal():
    rows = document('# pattern: a|b, "<release>" and *.auth, `<kept>`.\npattern: "a|b"\n')
    line = chart_readme.table(rows).splitlines()[-1]
    assert line == (
        '| `pattern` | string | `"a\\|b"` | pattern: a\\|b, "&lt;release>" and \\*.auth, `<kept>`. |'
    )


# The command on a copy of the chart ---------------------------------------------------------


@pytest.fixture
def chart(tmp_path: Path) -> Path:
    copy = tmp_path / "flashsale"
    copy.mkdir()
    for name in ("Chart.yaml", "values.yaml", "values.schema.json", chart_readme.TEMPLATE_NAME):
        shutil.copy(CHART / name, copy / name)
    return copy


def test_check_fails_on_a_stale_readme_and_says_how_to_fix_it(chart, capsys):
    assert chart_readme.main(["--chart", str(chart)]) == 0
    assert chart_readme.main(["--chart", str(chart), "--check"]) == 0
    values = chart / "values.yaml"
    values.write_text(values.read_text().replace("keepAliveSeconds: 100", "keepAliveSeconds: 120"))
    capsys.readouterr()
    assert chart_readme.main(["--chart", str(chart), "--check"]) == 1
    assert "is stale: run make chart-readme" in capsys.readouterr().err


def test_an_undocumented_value_fails_the_command_and_writes_nothing(chart, capsys):
    values = chart / "values.yaml"
    values.write_text(
        values.read_text().replace("  keepAliveSeconds: 100\n", "  keepAliveSeconds: 100\n  idle: 5\n")
    )
    assert chart_readme.main(["--chart", str(chart)]) == 1
    assert "api.idle has no comment" in capsys.readouterr().err
    assert not (chart / "README.md").exists()


def test_the_template_needs_its_table_placeholder_and_known_fields_only(chart):
    template = chart / chart_readme.TEMPLATE_NAME
    text = template.read_text()
    template.write_text(text.replace(chart_readme.TABLE_PLACEHOLDER, ""))
    with pytest.raises(ValuesError, match="exactly once"):
        chart_readme.render(chart)
    template.write_text(text + "{{ chartVersion }}\n")
    with pytest.raises(ValuesError, match="chartVersion"):
        chart_readme.render(chart)
