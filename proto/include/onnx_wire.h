#ifndef ONNX_WIRE_H
#define ONNX_WIRE_H
#include <stddef.h>
#include <stdint.h>
#include <protobuf-c/protobuf-c.h>
#include "onnx.pb-c.h"

/// Outcome of `onnx_wire_scan`; `status` is 0 when the bytes are well-formed.
typedef struct {
  int status;             /* 0 ok, else one of ONNX_WIRE_* below */
  size_t offset;          /* byte offset of the problem */
  int depth;              /* deepest message nesting seen (root = 1) */
  uint32_t field_number;  /* field at fault, if any */
  uint32_t wire_type;     /* its wire type on disk */
  const char *message_name; /* full name of the message holding the field */
  const char *field_name;   /* declared name of that field, NULL if unknown to the schema */
} OnnxWireScan;

enum {
  ONNX_WIRE_OK = 0,
  ONNX_WIRE_TRUNCATED = 1,      /* a varint, fixed field or length runs past the end of its message */
  ONNX_WIRE_BAD_VARINT = 2,     /* varint longer than 10 bytes */
  ONNX_WIRE_BAD_TAG = 3,        /* field number 0 or wire type 3, 4, 6 or 7 */
  ONNX_WIRE_WRONG_TYPE = 4,     /* known field stored with a wire type its declared type cannot have */
  ONNX_WIRE_TOO_DEEP = 5,       /* message nesting deeper than max_depth */
};

/// Walks protobuf bytes of message `root` without recursion, checking every tag, varint and
/// length against the bounds of its enclosing message and the nesting depth against `max_depth`.
/// Runs before protobuf_c_message_unpack, which recurses without a limit.
void onnx_wire_scan(const uint8_t *data, size_t length, const ProtobufCMessageDescriptor *root,
                    int max_depth, OnnxWireScan *result);

#endif
