"""The commands' shared last step: print the table, and write the results JSON when asked."""

import json

from m2dino_training.cli import print_and_write


def test_print_and_write_prints_the_table_and_writes_the_results_only_when_asked(tmp_path, capsys):
    results = {"tasks": {"breast_2cls": {"metrics": {"Accuracy": 0.75}}}}
    print_and_write("| task | Accuracy |", results, str(tmp_path / "results.json"))
    assert capsys.readouterr().out == "| task | Accuracy |\n"
    assert json.loads((tmp_path / "results.json").read_text()) == results
    print_and_write("table", results, None)
    assert capsys.readouterr().out == "table\n" and [p.name for p in tmp_path.iterdir()] == ["results.json"]
