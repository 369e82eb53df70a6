"""Snippet feature extraction from videos: ``python -m stovtal.extract``.

Decode (decord, or PyAV as fallback) -> open_clip image tower -> mean-pool per
snippet -> L2-normalise -> ``<video_id>.npy`` ``[T, D]`` + ``<video_id>.meta.json``.
"""

from .extractor import ClipFrameEncoder, extract_video
from .run import ExtractConfig, extract_features, list_videos
from .sampling import num_snippets, num_target_frames, snippet_frame_indices, target_to_native
from .video import VideoDecodeError, decord_status, open_video

__all__ = [
    "ClipFrameEncoder",
    "ExtractConfig",
    "VideoDecodeError",
    "decord_status",
    "extract_features",
    "extract_video",
    "list_videos",
    "num_snippets",
    "num_target_frames",
    "open_video",
    "snippet_frame_indices",
    "target_to_native",
]
