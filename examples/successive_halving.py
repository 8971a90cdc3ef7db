"""Drive the population program by hand: successive halving in a dozen lines.

``jaxhp.engine.Population`` holds a bucket's compiled program and its trials' device
state. Here 16 random configurations of an MLP train side by side; every rung of 2
epochs the worse half is stopped (its state frozen, its slot no longer computed once
the whole population is done), until one remains. The same object runs ``tune``'s
rounds, its recycled stream and PBT.

Run: python examples/successive_halving.py
"""

from __future__ import annotations

import numpy as np
from sklearn.datasets import load_digits

import jaxhp
from jaxhp.engine import Population


def main(n: int = 16, rung_epochs: int = 2, seed: int = 0) -> dict:
    X, y = load_digits(return_X_y=True)
    task = jaxhp.tasks.MLPClassifier(X, y, val_fraction=0.2, seed=seed)
    space = jaxhp.Space(
        learning_rate=jaxhp.Float(1e-4, 1e-1, log=True),
        width=jaxhp.Choice([32, 64]),
        batch_size=jaxhp.Fixed(64),
        epochs=jaxhp.Fixed(rung_epochs * int(np.log2(n))),
    )
    task.check_space(space)
    values = space.decode(np.random.default_rng(seed).random((n, space.dim)))
    hp = task.hparams(space, values)  # {name: [n]} per-trial arrays

    pop = Population(task, hp, size=n, seed=seed, segment_epochs=rung_epochs)
    pop.start(np.arange(n), hp)
    alive = np.arange(n)  # the slots still in the race
    while len(alive) > 1:
        pop.train()
        score = pop.current()[alive]  # each survivor's accuracy at this rung
        print(f"rung: {len(alive)} trials, best {np.nanmax(score):.3f}")
        keep = alive[np.argsort(-score, kind="stable")[: len(alive) // 2]]
        pop.stop(np.setdiff1d(alive, keep))  # frozen: state and best epoch kept
        alive = keep
    while pop.active.any():  # the winner trains out its epochs
        pop.train()

    out = pop.outcomes()
    best = int(np.nanargmax(out.value))
    params = space.to_python(values, best)
    print(f"best trial {best}: accuracy {out.value[best]:.3f} with {params}")
    return {"trial": best, "value": float(out.value[best]), "params": params}


if __name__ == "__main__":
    main()
