"""What each recipe reached when it was run, and in how long: shown by ``binarynet recipes NAME``.

One entry per recipe that has a recorded run (its page under ``results/`` has the command, the
schedule and the per-epoch table). Test errors are at the best-validation epoch (the paper's
protocol) unless the recipe trains without a validation split, where the last epoch counts.
Hardware: "2 CPU cores" is this project's development machine (a 2-core AMD EPYC, Zen 4).
CPU runs recorded before the fused Adam step became the training default (all but
``mnist_mlp_quick``'s and the cosine trials of ``mnist_mlp_cpu_hour``) took torch's default
step: the same update up to float32 rounding, so a re-run lands near those figures, not on them
to the last digit.
"""
from __future__ import annotations

RESULTS = {
    "mnist_mlp_quick": "1.76% MNIST test error after its 10 epochs on all 60,000 training images "
                       "(seeds 1, 2, 3: 1.72%, 1.62%, 1.58%; mean of the four 1.67%), about 3 min "
                       "on one core (17.7 s per epoch, quiet machine; results/mnist_mlp_quick_full.md); "
                       "settings chosen on the validation split (results/mnist_mlp_quick_cosine.md)",
    "mnist_mlp": "1.48% MNIST test error after 34 of 60 compressed epochs on one H200 "
                 "(results/mnist_mlp_h200.md); the paper: 0.96% after 1000 epochs",
    "mnist_mlp_cpu_hour": "1.44% MNIST test error at the best-validation epoch (13 of 17), 43 min on "
                          "the 2 CPU cores of that run (results/mnist_mlp_cpu_17ep.md); with the "
                          "fused Adam step 265 ms per step on 2 threads, about 38 min; a cosine decay "
                          "and 19 epochs (about 42 min) lost on validation "
                          "(results/mnist_mlp_cpu_hour_cosine.md, results/mnist_mlp_cpu_hour_19ep.md)",
    "cifar10_vgg": "19.67% CIFAR-10 test error after 16 of 30 compressed epochs on one H200 "
                   "(results/cifar10_vgg_h200.md); the paper: 11.40% after 500 epochs",
    "cifar10_vgg_quick": "26.64% CIFAR-10 test error with --epochs 20, 22 min on 2 CPU cores "
                         "(results/cifar10_vgg_quick_20ep.md)",
    "reactnet18_cifar10_cpu_quick": "43.89% CIFAR-10 test error (56.1% accuracy, full test set) after "
                                    "its 5 epochs, 16.4 min on 2 CPU cores "
                                    "(results/reactnet18_cifar10_cpu_quick.md)",
}


def result(name: str) -> str | None:
    """The recorded result of recipe ``name``, or None when it has not been run here."""
    return RESULTS.get(name)
