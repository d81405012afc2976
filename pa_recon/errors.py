"""The one exception class for errors a user can cause (bad files, shapes, values, missing priors)."""

from __future__ import annotations

from os import PathLike


class PAReconError(ValueError):
    """A user-caused error, naming the file and the field it concerns where there is one.

    >>> str(PAReconError("has NaN values", file="scan.h5", field="/measurements/data"))
    'scan.h5: /measurements/data: has NaN values'
    """

    def __init__(self, message: str, *, file: str | PathLike[str] | None = None, field: str | None = None) -> None:
        self.file = None if file is None else str(file)
        self.field = field
        self.message = message
        parts = [p for p in (self.file, field) if p]
        super().__init__(": ".join([*parts, message]))

    def under(self, key: str, file: str | PathLike[str] | None = None) -> PAReconError:
        """The same error with its field put under the settings key ``key`` (field ``levels`` under ``flow`` becomes
        ``flow.levels``; no field becomes ``key``), and naming ``file`` where given.

        >>> str(PAReconError("unknown", field="levls").under("model.flow", file="params.yaml"))
        'params.yaml: model.flow.levls: unknown'
        """
        return PAReconError(self.message, file=self.file if file is None else file,
                            field=f"{key}.{self.field}" if self.field else key)
