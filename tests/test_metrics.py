import pytest

from segpcl.metrics import AccuracyMatrix, backward_transfer, forgetting, summarize

ACC = [
    [90.0],
    [70.0, 80.0],
    [50.0, 60.0, 85.0],
]


def test_forgetting_and_bwt_by_hand():
    # forgetting: task 0: max(90, 70) - 50 = 40; task 1: max(80) - 60 = 20 -> 30
    assert forgetting(ACC) == pytest.approx(30.0)
    # bwt: (50 - 90 + 60 - 80) / 2 = -30
    assert backward_transfer(ACC) == pytest.approx(-30.0)


def test_single_task_has_no_forgetting():
    assert forgetting([[50.0]]) == 0.0
    assert backward_transfer([[50.0]]) == 0.0


def test_matrix_from_counts():
    m = AccuracyMatrix(2)
    m.update(0, [9], [10])
    m.update(1, [5, 6], [10, 20])
    r = m.result()
    assert r["accuracy_matrix"] == [[90.0], [50.0, 30.0]]
    assert r["seen_accuracy"] == pytest.approx([90.0, 100 * 11 / 30])
    assert r["last"] == pytest.approx(100 * 11 / 30)
    assert r["avg"] == pytest.approx((90.0 + 100 * 11 / 30) / 2)
    assert r["forgetting"] == pytest.approx(40.0)


def test_out_of_order_update_is_refused():
    m = AccuracyMatrix(3)
    with pytest.raises(ValueError):
        m.update(1, [1, 1], [2, 2])


def test_summarize_forgetting_uses_max_over_earlier_tasks():
    acc = [[60.0], [80.0, 70.0], [40.0, 70.0, 90.0]]  # task 0 peaked after task 1
    assert summarize(acc, [60, 75, 66])["forgetting"] == pytest.approx(((80 - 40) + 0) / 2)
