"""BERT fine-tuning (lecture 7 / HW7): sequence classification and extractive question answering.

Entry points ``bert_classification`` (:class:`BertClassification`) and ``bert_qa`` (:class:`BertQA`); the shared
fine-tuning options in :mod:`lecture_modules.bert.common`, the QA post-processing in
:mod:`lecture_modules.bert.qa_core`, backbones in :mod:`lecture_modules.bert.models`. Tokenisation and QA windows
are data code: :mod:`datamodules.tokenization`, :mod:`datamodules.qa_features`.
"""

from lecture_modules.bert.classification import BertClassification
from lecture_modules.bert.qa import BertQA

__all__ = ["BertClassification", "BertQA"]
