"""Which flow ``invconv-flow`` builds: a model name and its builder's arguments, stored in every checkpoint."""

from __future__ import annotations

from dataclasses import asdict, dataclass

from invconv_cupy.cli.errors import CliError

MODELS = ("inverse_flow", "glow", "solve_sampling_flow")


@dataclass(frozen=True)
class ModelSpec:
    """A model of :mod:`invconv_cupy.torch.flows` and its builder's arguments.

    Attributes
    ----------
    name : {"inverse_flow", "glow", "solve_sampling_flow"}
    input_shape : (int, int, int)
        ``(C, H, W)`` of the images.
    levels : int
        ``L``, the number of scales.
    steps : int
        ``K``, flow steps per scale.
    hidden : int
        Hidden channels of the coupling networks.
    kernel_size : int
        The inverse convolutions' kernel (unused by ``glow``).
    """

    name: str
    input_shape: tuple[int, int, int]
    levels: int
    steps: int
    hidden: int
    kernel_size: int

    def build(self):
        """The ``normflows.MultiscaleFlow`` (on the CPU, float32, freshly initialized from torch's global RNG)."""
        try:
            from invconv_cupy.torch import flows
        except ImportError as exc:
            raise CliError(str(exc)) from None
        if self.name not in MODELS:
            raise CliError(f"unknown model {self.name!r}; expected one of {', '.join(MODELS)}")
        kwargs = {"levels": self.levels, "steps": self.steps, "hidden": self.hidden}
        if self.name != "glow":
            kwargs["kernel_size"] = self.kernel_size
        try:
            return getattr(flows, self.name)(self.input_shape, **kwargs)
        except ValueError as exc:
            raise CliError(str(exc)) from None

    def as_dict(self) -> dict:
        """Plain values (for a checkpoint)."""
        return {**asdict(self), "input_shape": list(self.input_shape)}

    @classmethod
    def from_dict(cls, values: dict) -> ModelSpec:
        """The inverse of :meth:`as_dict`."""
        return cls(**{**values, "input_shape": tuple(values["input_shape"])})

    def describe(self) -> str:
        """One line for logs: the name and its architecture."""
        kernel = "" if self.name == "glow" else f", {self.kernel_size}x{self.kernel_size} inverse convolutions"
        c, h, w = self.input_shape
        return f"{self.name} (L={self.levels}, K={self.steps}, hidden {self.hidden}{kernel}) on {c}x{h}x{w}"


def parameter_count(model) -> int:
    """Trainable parameters of ``model``."""
    return sum(p.numel() for p in model.parameters() if p.requires_grad)
