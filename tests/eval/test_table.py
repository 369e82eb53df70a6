"""The results table shared by train, infer, selftrain and python -m stovtal.eval."""

from stovtal.eval.table import format_results_table

TIOUS = [0.3, 0.5, 0.7]


def test_results_table():
    gzsl = {"mAP": [0.5, 0.25, None], "average_mAP": 0.375, "base_mAP": [0.6, 0.3, 0.1],
            "average_base_mAP": 1 / 3, "novel_mAP": [0.4, 0.2, 0.0], "average_novel_mAP": 0.2,
            "harmonic_mAP": [0.48, None, 0.0], "average_harmonic_mAP": 0.25}
    first = {"CB": {"mAP": [1.0, 0.5, 0.0], "average_mAP": 0.5}, "CN": None, "GZSL": gzsl,
             "class_agnostic": {"mAP": [0.9, 0.8, 0.7], "average_mAP": 0.8}}
    second = {"CB": {"mAP": [1.0, 0.75, 0.5], "average_mAP": 0.75}, "CN": {"mAP": [None] * 3, "average_mAP": None},
              "GZSL": {"mAP": [0.1, 0.1, 0.1], "average_mAP": 0.1}}
    lines = format_results_table({"base": first, "self-trained": second}, TIOUS).split("\n")
    assert lines[0].split() == ["model", "setting", "@0.3", "@0.5", "@0.7", "avg"]
    body = [ln.split() for ln in lines[2:] if not ln.startswith("-")]
    assert body[:-1] == [
        ["base", "CB", "100.00", "50.00", "0.00", "50.00"],
        ["base", "GZSL", "50.00", "25.00", "n/a", "37.50"],
        ["base", "GZSL", "base", "60.00", "30.00", "10.00", "33.33"],
        ["base", "GZSL", "novel", "40.00", "20.00", "0.00", "20.00"],
        ["base", "GZSL", "HM", "48.00", "n/a", "0.00", "25.00"],
        ["base", "class-agnostic", "90.00", "80.00", "70.00", "80.00"],
        ["self-trained", "CB", "100.00", "75.00", "50.00", "75.00"],
        ["self-trained", "CN", "n/a", "n/a", "n/a", "n/a"],
        ["self-trained", "GZSL", "10.00", "10.00", "10.00", "10.00"],
    ]
    assert lines[-1] == "self-trained - base, avg mAP points: CB +25.00, GZSL -27.50"
    # one model: no difference line; columns line up under the header
    single = format_results_table({"best": first}, TIOUS).split("\n")
    assert not any(" - " in ln for ln in single)
    assert {len(ln) for ln in single} == {len(single[0])}
    # a plain detection result (python -m stovtal.eval without a split) is one row
    plain = format_results_table({"pred.json": {"mAP": [0.5, 0.5, 0.25], "average_mAP": 0.4}}, TIOUS)
    assert plain.split("\n")[2].split() == ["pred.json", "detection", "50.00", "50.00", "25.00", "40.00"]
