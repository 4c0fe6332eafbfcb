"""Imports every benchmark module so that each registers itself."""

from . import cars196, cifar100, cub200, folder, imagenet_r, imagenet_sub, omnibenchmark, toy, ucf101  # noqa: F401
