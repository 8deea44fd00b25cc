"""Errors that the command lines turn into one clear line and a non-zero exit."""


class LvmPolicyError(Exception):
    """Base class: a problem with the user's input, reported without a traceback."""


class DatasetError(LvmPolicyError):
    """A demonstration dataset is missing, unreadable or invalid."""


class CheckpointError(LvmPolicyError):
    """A saved policy is missing, damaged, unsafe or made for another environment."""


class ConfigError(LvmPolicyError):
    """An option has an impossible value."""


class TrainingDivergedError(LvmPolicyError):
    """The loss became non-finite; the last good checkpoint is kept."""


class EnvError(LvmPolicyError):
    """An environment cannot be made, does not fit the policy, or failed during a rollout."""
