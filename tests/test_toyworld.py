import numpy as np

from segpcl import toyworld as tw
from segpcl.benchmarks.base import DataConfig, TaskStream, build_benchmark, pycil_class_order


def test_rendering_is_deterministic_and_in_range():
    labels = np.arange(64)
    c, s = tw.split_class(labels)
    a, sa = tw.render(c, s, tw.DOWNSTREAM, seed=3)
    b, sb = tw.render(c, s, tw.DOWNSTREAM, seed=3)
    assert a.shape == (64, 32, 32, 3) and a.dtype == np.uint8
    assert np.array_equal(a, b) and np.array_equal(sa, sb)
    assert not np.array_equal(a, tw.render(c, s, tw.DOWNSTREAM, seed=4)[0])


def test_classes_differ_in_colour_and_shape():
    # the same seed, two colours of one shape: the shape pixels differ in colour
    c = np.array([0, 5])
    s = np.array([1, 1])
    img, _ = tw.render(c, s, tw.PRETRAIN, seed=0)
    assert np.abs(img[0].astype(int) - img[1].astype(int)).max() > 100


def test_class_names_match_indices():
    labels = np.arange(64)
    c, s = tw.split_class(labels)
    assert np.array_equal(tw.class_of(c, s), labels)
    assert tw.CLASS_NAMES[tw.class_of(np.array([0]), np.array([0]))[0]] == "red circle"


def test_toy_benchmark_stream():
    bench = build_benchmark("toy", DataConfig(image_size=32))
    assert bench.n_classes == 64
    stream = TaskStream(bench, pycil_class_order(64), [8] * 8)
    ds = stream.train_set(2)
    x, y = ds[0]
    assert x.shape == (3, 32, 32) and 0 <= float(x.min()) and float(x.max()) <= 1
    assert y in stream.task_range(2)
    assert len(ds) == 8 * 80
    assert len(stream.test_set(1)) == 16 * 30


def test_pycil_order_is_seed_1993_permutation():
    expected = np.random.RandomState(1993).permutation(100).tolist()
    assert pycil_class_order(100) == expected
    assert pycil_class_order(100)[:5] == [68, 56, 78, 8, 23]
