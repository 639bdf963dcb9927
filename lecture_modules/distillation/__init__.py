"""Knowledge distillation — lecture 13 (network compression): the lecture is :mod:`.distillation`."""

from lecture_modules.distillation.distillation import Distillation, ParameterBudgetError
from lecture_modules.distillation.students import StudentSpec
from lecture_modules.distillation.teachers import TeacherSpec

__all__ = ["Distillation", "ParameterBudgetError", "StudentSpec", "TeacherSpec"]
