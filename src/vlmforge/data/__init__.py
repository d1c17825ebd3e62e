"""The data layer every stage uses: LLaVA records, validation, images, chat encoding, collation and packing.

Import torch-heavy pieces (``ConversationDataset``, collators, packing) from their modules; this package only
re-exports the light ones so ``import vlmforge.data`` stays cheap.
"""

from vlmforge.data.chat import IGNORE_INDEX, EncodedSample, encode_conversation, image_seq_length, to_messages
from vlmforge.data.images import load_image
from vlmforge.data.records import Rejections, load_records, read_records, save_records
from vlmforge.data.validate import IMAGE_TOKEN, validate_record

__all__ = [
    "IGNORE_INDEX",
    "IMAGE_TOKEN",
    "EncodedSample",
    "Rejections",
    "encode_conversation",
    "image_seq_length",
    "load_image",
    "load_records",
    "read_records",
    "save_records",
    "to_messages",
    "validate_record",
]
