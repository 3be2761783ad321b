from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class Source(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    SOURCE_UNSPECIFIED: _ClassVar[Source]
    SOURCE_MODEL: _ClassVar[Source]
    SOURCE_POPULARITY_FALLBACK: _ClassVar[Source]
SOURCE_UNSPECIFIED: Source
SOURCE_MODEL: Source
SOURCE_POPULARITY_FALLBACK: Source

class RecommendRequest(_message.Message):
    __slots__ = ("user_id", "k", "history", "exclude_item_ids", "candidate_item_ids", "allow_seen", "include_titles", "explain", "include_labels", "exclude_labels", "boost", "bury", "skip_rule_sets", "shown_cap", "shown_window_hours")
    USER_ID_FIELD_NUMBER: _ClassVar[int]
    K_FIELD_NUMBER: _ClassVar[int]
    HISTORY_FIELD_NUMBER: _ClassVar[int]
    EXCLUDE_ITEM_IDS_FIELD_NUMBER: _ClassVar[int]
    CANDIDATE_ITEM_IDS_FIELD_NUMBER: _ClassVar[int]
    ALLOW_SEEN_FIELD_NUMBER: _ClassVar[int]
    INCLUDE_TITLES_FIELD_NUMBER: _ClassVar[int]
    EXPLAIN_FIELD_NUMBER: _ClassVar[int]
    INCLUDE_LABELS_FIELD_NUMBER: _ClassVar[int]
    EXCLUDE_LABELS_FIELD_NUMBER: _ClassVar[int]
    BOOST_FIELD_NUMBER: _ClassVar[int]
    BURY_FIELD_NUMBER: _ClassVar[int]
    SKIP_RULE_SETS_FIELD_NUMBER: _ClassVar[int]
    SHOWN_CAP_FIELD_NUMBER: _ClassVar[int]
    SHOWN_WINDOW_HOURS_FIELD_NUMBER: _ClassVar[int]
    user_id: str
    k: int
    history: _containers.RepeatedScalarFieldContainer[str]
    exclude_item_ids: _containers.RepeatedScalarFieldContainer[str]
    candidate_item_ids: _containers.RepeatedScalarFieldContainer[str]
    allow_seen: bool
    include_titles: bool
    explain: bool
    include_labels: _containers.RepeatedScalarFieldContainer[str]
    exclude_labels: _containers.RepeatedScalarFieldContainer[str]
    boost: _containers.RepeatedCompositeFieldContainer[LabelFactor]
    bury: _containers.RepeatedCompositeFieldContainer[LabelFactor]
    skip_rule_sets: bool
    shown_cap: int
    shown_window_hours: float
    def __init__(self, user_id: _Optional[str] = ..., k: _Optional[int] = ..., history: _Optional[_Iterable[str]] = ..., exclude_item_ids: _Optional[_Iterable[str]] = ..., candidate_item_ids: _Optional[_Iterable[str]] = ..., allow_seen: _Optional[bool] = ..., include_titles: _Optional[bool] = ..., explain: _Optional[bool] = ..., include_labels: _Optional[_Iterable[str]] = ..., exclude_labels: _Optional[_Iterable[str]] = ..., boost: _Optional[_Iterable[_Union[LabelFactor, _Mapping]]] = ..., bury: _Optional[_Iterable[_Union[LabelFactor, _Mapping]]] = ..., skip_rule_sets: _Optional[bool] = ..., shown_cap: _Optional[int] = ..., shown_window_hours: _Optional[float] = ...) -> None: ...

class LabelFactor(_message.Message):
    __slots__ = ("label", "factor")
    LABEL_FIELD_NUMBER: _ClassVar[int]
    FACTOR_FIELD_NUMBER: _ClassVar[int]
    label: str
    factor: float
    def __init__(self, label: _Optional[str] = ..., factor: _Optional[float] = ...) -> None: ...

class RecommendBatchRequest(_message.Message):
    __slots__ = ("requests",)
    REQUESTS_FIELD_NUMBER: _ClassVar[int]
    requests: _containers.RepeatedCompositeFieldContainer[RecommendRequest]
    def __init__(self, requests: _Optional[_Iterable[_Union[RecommendRequest, _Mapping]]] = ...) -> None: ...

class ScoredItem(_message.Message):
    __slots__ = ("item_id", "score", "title", "explanations", "explored", "rules")
    ITEM_ID_FIELD_NUMBER: _ClassVar[int]
    SCORE_FIELD_NUMBER: _ClassVar[int]
    TITLE_FIELD_NUMBER: _ClassVar[int]
    EXPLANATIONS_FIELD_NUMBER: _ClassVar[int]
    EXPLORED_FIELD_NUMBER: _ClassVar[int]
    RULES_FIELD_NUMBER: _ClassVar[int]
    item_id: str
    score: float
    title: str
    explanations: _containers.RepeatedCompositeFieldContainer[Explanation]
    explored: bool
    rules: _containers.RepeatedCompositeFieldContainer[RuleEffect]
    def __init__(self, item_id: _Optional[str] = ..., score: _Optional[float] = ..., title: _Optional[str] = ..., explanations: _Optional[_Iterable[_Union[Explanation, _Mapping]]] = ..., explored: _Optional[bool] = ..., rules: _Optional[_Iterable[_Union[RuleEffect, _Mapping]]] = ...) -> None: ...

class RuleEffect(_message.Message):
    __slots__ = ("rule", "source", "effect")
    RULE_FIELD_NUMBER: _ClassVar[int]
    SOURCE_FIELD_NUMBER: _ClassVar[int]
    EFFECT_FIELD_NUMBER: _ClassVar[int]
    rule: str
    source: str
    effect: str
    def __init__(self, rule: _Optional[str] = ..., source: _Optional[str] = ..., effect: _Optional[str] = ...) -> None: ...

class Explanation(_message.Message):
    __slots__ = ("item_id", "title", "weight", "events_ago")
    ITEM_ID_FIELD_NUMBER: _ClassVar[int]
    TITLE_FIELD_NUMBER: _ClassVar[int]
    WEIGHT_FIELD_NUMBER: _ClassVar[int]
    EVENTS_AGO_FIELD_NUMBER: _ClassVar[int]
    item_id: str
    title: str
    weight: float
    events_ago: int
    def __init__(self, item_id: _Optional[str] = ..., title: _Optional[str] = ..., weight: _Optional[float] = ..., events_ago: _Optional[int] = ...) -> None: ...

class RecommendResponse(_message.Message):
    __slots__ = ("items", "model_version", "source", "history_used", "recommendation_id")
    ITEMS_FIELD_NUMBER: _ClassVar[int]
    MODEL_VERSION_FIELD_NUMBER: _ClassVar[int]
    SOURCE_FIELD_NUMBER: _ClassVar[int]
    HISTORY_USED_FIELD_NUMBER: _ClassVar[int]
    RECOMMENDATION_ID_FIELD_NUMBER: _ClassVar[int]
    items: _containers.RepeatedCompositeFieldContainer[ScoredItem]
    model_version: int
    source: Source
    history_used: int
    recommendation_id: str
    def __init__(self, items: _Optional[_Iterable[_Union[ScoredItem, _Mapping]]] = ..., model_version: _Optional[int] = ..., source: _Optional[_Union[Source, str]] = ..., history_used: _Optional[int] = ..., recommendation_id: _Optional[str] = ...) -> None: ...

class RecommendBatchResponse(_message.Message):
    __slots__ = ("responses",)
    RESPONSES_FIELD_NUMBER: _ClassVar[int]
    responses: _containers.RepeatedCompositeFieldContainer[RecommendResponse]
    def __init__(self, responses: _Optional[_Iterable[_Union[RecommendResponse, _Mapping]]] = ...) -> None: ...

class Event(_message.Message):
    __slots__ = ("event_id", "user_id", "item_id", "kind", "value", "timestamp_ms", "recommendation_id")
    EVENT_ID_FIELD_NUMBER: _ClassVar[int]
    USER_ID_FIELD_NUMBER: _ClassVar[int]
    ITEM_ID_FIELD_NUMBER: _ClassVar[int]
    KIND_FIELD_NUMBER: _ClassVar[int]
    VALUE_FIELD_NUMBER: _ClassVar[int]
    TIMESTAMP_MS_FIELD_NUMBER: _ClassVar[int]
    RECOMMENDATION_ID_FIELD_NUMBER: _ClassVar[int]
    event_id: str
    user_id: str
    item_id: str
    kind: str
    value: float
    timestamp_ms: int
    recommendation_id: str
    def __init__(self, event_id: _Optional[str] = ..., user_id: _Optional[str] = ..., item_id: _Optional[str] = ..., kind: _Optional[str] = ..., value: _Optional[float] = ..., timestamp_ms: _Optional[int] = ..., recommendation_id: _Optional[str] = ...) -> None: ...

class FeedbackRequest(_message.Message):
    __slots__ = ("events",)
    EVENTS_FIELD_NUMBER: _ClassVar[int]
    events: _containers.RepeatedCompositeFieldContainer[Event]
    def __init__(self, events: _Optional[_Iterable[_Union[Event, _Mapping]]] = ...) -> None: ...

class FeedbackResponse(_message.Message):
    __slots__ = ("stored", "duplicates", "deleted_user_events")
    STORED_FIELD_NUMBER: _ClassVar[int]
    DUPLICATES_FIELD_NUMBER: _ClassVar[int]
    DELETED_USER_EVENTS_FIELD_NUMBER: _ClassVar[int]
    stored: int
    duplicates: int
    deleted_user_events: int
    def __init__(self, stored: _Optional[int] = ..., duplicates: _Optional[int] = ..., deleted_user_events: _Optional[int] = ...) -> None: ...

class SimilarItemsRequest(_message.Message):
    __slots__ = ("item_ids", "k", "user_id", "exclude_item_ids", "candidate_item_ids", "allow_seen", "include_titles", "include_labels", "exclude_labels")
    ITEM_IDS_FIELD_NUMBER: _ClassVar[int]
    K_FIELD_NUMBER: _ClassVar[int]
    USER_ID_FIELD_NUMBER: _ClassVar[int]
    EXCLUDE_ITEM_IDS_FIELD_NUMBER: _ClassVar[int]
    CANDIDATE_ITEM_IDS_FIELD_NUMBER: _ClassVar[int]
    ALLOW_SEEN_FIELD_NUMBER: _ClassVar[int]
    INCLUDE_TITLES_FIELD_NUMBER: _ClassVar[int]
    INCLUDE_LABELS_FIELD_NUMBER: _ClassVar[int]
    EXCLUDE_LABELS_FIELD_NUMBER: _ClassVar[int]
    item_ids: _containers.RepeatedScalarFieldContainer[str]
    k: int
    user_id: str
    exclude_item_ids: _containers.RepeatedScalarFieldContainer[str]
    candidate_item_ids: _containers.RepeatedScalarFieldContainer[str]
    allow_seen: bool
    include_titles: bool
    include_labels: _containers.RepeatedScalarFieldContainer[str]
    exclude_labels: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, item_ids: _Optional[_Iterable[str]] = ..., k: _Optional[int] = ..., user_id: _Optional[str] = ..., exclude_item_ids: _Optional[_Iterable[str]] = ..., candidate_item_ids: _Optional[_Iterable[str]] = ..., allow_seen: _Optional[bool] = ..., include_titles: _Optional[bool] = ..., include_labels: _Optional[_Iterable[str]] = ..., exclude_labels: _Optional[_Iterable[str]] = ...) -> None: ...

class SimilarItemsResponse(_message.Message):
    __slots__ = ("items", "model_version", "unknown_item_ids")
    ITEMS_FIELD_NUMBER: _ClassVar[int]
    MODEL_VERSION_FIELD_NUMBER: _ClassVar[int]
    UNKNOWN_ITEM_IDS_FIELD_NUMBER: _ClassVar[int]
    items: _containers.RepeatedCompositeFieldContainer[ScoredItem]
    model_version: int
    unknown_item_ids: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, items: _Optional[_Iterable[_Union[ScoredItem, _Mapping]]] = ..., model_version: _Optional[int] = ..., unknown_item_ids: _Optional[_Iterable[str]] = ...) -> None: ...
