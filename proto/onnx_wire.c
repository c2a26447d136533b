#include "include/onnx_wire.h"
#include <string.h>

#define ONNX_WIRE_STACK_LIMIT 256

typedef struct {
  size_t end;
  const ProtobufCMessageDescriptor *descriptor;
} Frame;

static int read_varint(const uint8_t *data, size_t end, size_t *pos, uint64_t *value) {
  uint64_t result = 0;
  for (int shift = 0, i = 0; i < 10; i++, shift += 7) {
    if (*pos >= end) return ONNX_WIRE_TRUNCATED;
    uint8_t byte = data[(*pos)++];
    result |= (uint64_t)(byte & 0x7f) << shift;
    if (!(byte & 0x80)) { *value = result; return ONNX_WIRE_OK; }
  }
  return ONNX_WIRE_BAD_VARINT;
}

static int wire_type_allowed(const ProtobufCFieldDescriptor *field, uint32_t wire_type) {
  int repeated = field->label == PROTOBUF_C_LABEL_REPEATED;
  switch (field->type) {
  case PROTOBUF_C_TYPE_INT32: case PROTOBUF_C_TYPE_SINT32: case PROTOBUF_C_TYPE_UINT32:
  case PROTOBUF_C_TYPE_INT64: case PROTOBUF_C_TYPE_SINT64: case PROTOBUF_C_TYPE_UINT64:
  case PROTOBUF_C_TYPE_BOOL: case PROTOBUF_C_TYPE_ENUM:
    return wire_type == 0 || (repeated && wire_type == 2);
  case PROTOBUF_C_TYPE_SFIXED32: case PROTOBUF_C_TYPE_FIXED32: case PROTOBUF_C_TYPE_FLOAT:
    return wire_type == 5 || (repeated && wire_type == 2);
  case PROTOBUF_C_TYPE_SFIXED64: case PROTOBUF_C_TYPE_FIXED64: case PROTOBUF_C_TYPE_DOUBLE:
    return wire_type == 1 || (repeated && wire_type == 2);
  case PROTOBUF_C_TYPE_STRING: case PROTOBUF_C_TYPE_BYTES: case PROTOBUF_C_TYPE_MESSAGE:
    return wire_type == 2;
  }
  return 0;
}

void onnx_wire_scan(const uint8_t *data, size_t length, const ProtobufCMessageDescriptor *root,
                    int max_depth, OnnxWireScan *result) {
  Frame stack[ONNX_WIRE_STACK_LIMIT];
  int top = 0;
  size_t pos = 0;
  memset(result, 0, sizeof *result);
  if (max_depth > ONNX_WIRE_STACK_LIMIT) max_depth = ONNX_WIRE_STACK_LIMIT;
  stack[0].end = length;
  stack[0].descriptor = root;
  result->depth = 1;

#define FAIL(code) do { result->status = (code); result->offset = pos; \
    result->message_name = stack[top].descriptor ? stack[top].descriptor->name : "unknown"; return; } while (0)

  for (;;) {
    while (pos == stack[top].end) {
      if (top == 0) return;
      top--;
    }
    size_t tag_start = pos;
    uint64_t tag;
    int status = read_varint(data, stack[top].end, &pos, &tag);
    if (status) FAIL(status);
    uint32_t field_number = (uint32_t)(tag >> 3);
    uint32_t wire_type = (uint32_t)(tag & 7);
    result->field_number = field_number;
    result->wire_type = wire_type;
    if (field_number == 0 || (tag >> 3) > 0x1fffffff) { pos = tag_start; FAIL(ONNX_WIRE_BAD_TAG); }
    const ProtobufCFieldDescriptor *field = NULL;
    if (stack[top].descriptor)
      field = protobuf_c_message_descriptor_get_field(stack[top].descriptor, field_number);
    result->field_name = field ? field->name : NULL;
    if (field && !wire_type_allowed(field, wire_type)) { pos = tag_start; FAIL(ONNX_WIRE_WRONG_TYPE); }
    uint64_t value;
    switch (wire_type) {
    case 0:
      status = read_varint(data, stack[top].end, &pos, &value);
      if (status) FAIL(status);
      break;
    case 1:
      if (stack[top].end - pos < 8) FAIL(ONNX_WIRE_TRUNCATED);
      pos += 8;
      break;
    case 5:
      if (stack[top].end - pos < 4) FAIL(ONNX_WIRE_TRUNCATED);
      pos += 4;
      break;
    case 2:
      status = read_varint(data, stack[top].end, &pos, &value);
      if (status) FAIL(status);
      if (value > stack[top].end - pos) FAIL(ONNX_WIRE_TRUNCATED);
      if (field && field->type == PROTOBUF_C_TYPE_MESSAGE) {
        if (top + 2 > max_depth) { result->depth = top + 2; FAIL(ONNX_WIRE_TOO_DEEP); }
        top++;
        stack[top].end = pos + (size_t)value;
        stack[top].descriptor = (const ProtobufCMessageDescriptor *)field->descriptor;
        if (top + 1 > result->depth) result->depth = top + 1;
      } else {
        pos += (size_t)value;
      }
      break;
    default:
      pos = tag_start;
      FAIL(ONNX_WIRE_BAD_TAG);
    }
  }
#undef FAIL
}
