"""Work-directory layouts: every path an application writes, in one place.

Applications and their stages ask a layout for a path instead of joining names themselves,
so the layout below is the whole truth about a work directory::

    python -m stovtal.selftrain (SelfTrainLayout)
        config.yaml                     the resolved configuration of the last run
        world/ | world-web<N>/          the synthetic world (data.synthetic); -web<N>: enlarged web set
        base/                           stage.json, best.pt (training state),
          last.pt                       the final training state (raw and EMA weights)
          model.pt                      the base model (EMA weights), a model file
        pseudo/n<N>/                    stage.json, shards/ (manifest + outputs),
          pseudo_labels.json            the pseudo-labels of N unlabelled videos
        pseudo/n<N>-r<R>/               round R >= 2: labelled by round R-1's teacher
        retrain/n<N>/                   training state (last.pt: student and teacher), stage.json,
                                        refresh-e<epoch>/ (re-labelling),
          teacher.pt                    the self-trained teacher, a model file
        retrain/n<N>-r<R>/              round R >= 2 (retrain.rounds)
        eval/<model>.json               CB / CN / GZSL of "base", "selftrained-n<N>[-r<R>]" (the
                                        teacher) and "student-n<N>[-r<R>]" (the raw student)
        eval/<model>/stage.json
        report.md, results.json, plots/<name>.png

    python -m stovtal.feel (FeelLayout)
        world/                          the synthetic world (when no annotations are given)
        state.json                      the finished iterations' records (resume point)
        ckpt/iter_<t>.pt                CoLA of iteration t, a model file (assignment in meta)
        predictions_iter<t>.json, results.json, details.json, feel.png

    python -m stovtal.train (TrainLayout)
        config.yaml, last.pt, best.pt (training states), eval.json
"""

from __future__ import annotations

import os
from dataclasses import dataclass

__all__ = ["FeelLayout", "SelfTrainLayout", "TrainLayout"]


@dataclass(frozen=True)
class _Layout:
    root: str

    def path(self, *parts: str) -> str:
        return os.path.join(self.root, *parts)

    @property
    def config(self) -> str:
        return self.path("config.yaml")


@dataclass(frozen=True)
class TrainLayout(_Layout):
    """``python -m stovtal.train``'s work directory (the trainer writes ``last.pt`` / ``best.pt``)."""

    @property
    def last(self) -> str:
        return self.path("last.pt")

    @property
    def best(self) -> str:
        return self.path("best.pt")

    @property
    def eval(self) -> str:
        return self.path("eval.json")


@dataclass(frozen=True)
class SelfTrainLayout(_Layout):
    """``python -m stovtal.selftrain``'s work directory (see the module docstring)."""

    def world(self, num_web: int, default_num_web: int) -> str:
        return self.path("world" if num_web == default_num_web else f"world-web{num_web}")

    @property
    def base_dir(self) -> str:
        return self.path("base")

    @property
    def base_model(self) -> str:
        return self.path("base", "model.pt")

    @property
    def base_state(self) -> str:
        return TrainLayout(self.base_dir).last

    @staticmethod
    def run_name(n: int, round: int = 1) -> str:
        """``n<N>`` for self-training round 1 on N unlabelled videos, ``n<N>-r<R>`` for round R."""
        if round < 1:
            raise ValueError(f"round must be >= 1, got {round}")
        return f"n{n}" if round == 1 else f"n{n}-r{round}"

    def pseudo_dir(self, n: int, round: int = 1) -> str:
        return self.path("pseudo", self.run_name(n, round))

    def pseudo_labels(self, n: int, round: int = 1) -> str:
        return os.path.join(self.pseudo_dir(n, round), "pseudo_labels.json")

    def retrain_dir(self, n: int, round: int = 1) -> str:
        return self.path("retrain", self.run_name(n, round))

    def retrain_state(self, n: int, round: int = 1) -> str:
        """The retraining's training state: ``model`` = the raw student, ``ema`` = the teacher."""
        return TrainLayout(self.retrain_dir(n, round)).last

    def teacher(self, n: int, round: int = 1) -> str:
        return os.path.join(self.retrain_dir(n, round), "teacher.pt")

    def refresh_dir(self, n: int, epoch: int, round: int = 1) -> str:
        return os.path.join(self.retrain_dir(n, round), f"refresh-e{epoch:04d}")

    @property
    def eval_dir(self) -> str:
        return self.path("eval")

    def eval_result(self, model: str) -> str:
        return self.path("eval", f"{model}.json")

    def eval_stage_dir(self, model: str) -> str:
        return self.path("eval", model)

    @property
    def report(self) -> str:
        return self.path("report.md")

    @property
    def results(self) -> str:
        return self.path("results.json")

    @property
    def plots(self) -> str:
        return self.path("plots")


@dataclass(frozen=True)
class FeelLayout(_Layout):
    """``python -m stovtal.feel``'s work directory (see the module docstring)."""

    @property
    def world(self) -> str:
        return self.path("world")

    @property
    def state(self) -> str:
        return self.path("state.json")

    def checkpoint(self, iteration: int) -> str:
        return self.path("ckpt", f"iter_{iteration}.pt")

    def predictions(self, iteration: int) -> str:
        return self.path(f"predictions_iter{iteration}.json")

    @property
    def results(self) -> str:
        return self.path("results.json")

    @property
    def details(self) -> str:
        return self.path("details.json")

    @property
    def plot(self) -> str:
        return self.path("feel.png")
