import COnnx
import DistillCore
import Foundation

// The only file that touches protobuf-c pointers: bytes <-> Model.

/// Largest message nesting accepted; protobuf-c's decoder recurses once per level.
public let maximumNestingDepth = 32

enum ProtobufBridge {
  /// Decodes a `ModelProto`. The bytes are first walked without recursion (tags, lengths, wire
  /// types, nesting depth), so hostile input fails here instead of inside protobuf-c.
  static func decodeModel(_ bytes: [UInt8], file: String) throws -> Model {
    var scan = OnnxWireScan()
    bytes.withUnsafeBufferPointer { buffer in
      withUnsafePointer(to: onnx__model_proto__descriptor) { descriptor in
        onnx_wire_scan(buffer.baseAddress, buffer.count, descriptor, Int32(maximumNestingDepth), &scan)
      }
    }
    try checkScan(scan, file: file)
    guard let message = bytes.withUnsafeBufferPointer({ onnx__model_proto__unpack(nil, $0.count, $0.baseAddress) })
    else {
      throw ONNXError.malformed(
        file: file, detail: "protobuf-c could not decode it (a field holds a value its type cannot have)")
    }
    defer { onnx__model_proto__free_unpacked(message, nil) }
    return try Reader(file: file).readModel(message.pointee)
  }

  /// Decodes a `TensorProto` (the `.pb` files of the ONNX test-data layout).
  static func decodeTensor(_ bytes: [UInt8], file: String) throws -> TensorValue {
    var scan = OnnxWireScan()
    bytes.withUnsafeBufferPointer { buffer in
      withUnsafePointer(to: onnx__tensor_proto__descriptor) { descriptor in
        onnx_wire_scan(buffer.baseAddress, buffer.count, descriptor, Int32(maximumNestingDepth), &scan)
      }
    }
    try checkScan(scan, file: file)
    guard let message = bytes.withUnsafeBufferPointer({ onnx__tensor_proto__unpack(nil, $0.count, $0.baseAddress) })
    else {
      throw ONNXError.malformed(file: file, detail: "protobuf-c could not decode it as a TensorProto")
    }
    defer { onnx__tensor_proto__free_unpacked(message, nil) }
    return try Reader(file: file).readTensor(message.pointee)
  }

  /// Encodes a `TensorProto`.
  static func encodeTensor(_ tensor: TensorValue) -> [UInt8] {
    let arena = Arena()
    defer { arena.release() }
    let base = UnsafeRawPointer(arena.tensor(tensor)).assumingMemoryBound(to: ProtobufCMessage.self)
    var out = [UInt8](repeating: 0, count: protobuf_c_message_get_packed_size(base))
    _ = out.withUnsafeMutableBufferPointer { protobuf_c_message_pack(base, $0.baseAddress) }
    return out
  }

  private static func checkScan(_ scan: OnnxWireScan, file: String) throws {
    let status = Int(scan.status)
    guard status != ONNX_WIRE_OK else { return }
    let message = scan.message_name.map { String(cString: $0) } ?? "message"
    let fieldName = scan.field_name.map { " (\(String(cString: $0)))" } ?? ""
    let field = "field \(scan.field_number)\(fieldName) of \(message) at byte \(scan.offset)"
    switch status {
    case ONNX_WIRE_TOO_DEEP:
      throw ONNXError.nestingTooDeep(file: file, offset: scan.offset, limit: maximumNestingDepth)
    case ONNX_WIRE_TRUNCATED:
      throw ONNXError.malformed(
        file: file, detail: "\(field) is truncated: it runs past the end of its enclosing message or of the file")
    case ONNX_WIRE_BAD_VARINT:
      throw ONNXError.malformed(file: file, detail: "\(field): a varint is longer than 10 bytes")
    case ONNX_WIRE_WRONG_TYPE:
      throw ONNXError.malformed(
        file: file,
        detail:
          "\(field) has wire type \(scan.wire_type) (\(wireTypeName(scan.wire_type))), which its declared type cannot have"
      )
    default:
      throw ONNXError.malformed(
        file: file,
        detail: "invalid tag at byte \(scan.offset) (field number \(scan.field_number), wire type \(scan.wire_type))")
    }
  }

  private static func wireTypeName(_ type: UInt32) -> String {
    ["varint", "64-bit", "length-delimited", "start group", "end group", "32-bit"].indices.contains(Int(type))
      ? ["varint", "64-bit", "length-delimited", "start group", "end group", "32-bit"][Int(type)] : "invalid"
  }

  // MARK: reading

  /// Converts decoded protobuf-c structs to the IR, checking every tensor's sizes before copying its data.
  struct Reader {
    let file: String

    func string(_ pointer: UnsafeMutablePointer<CChar>?) -> String? {
      pointer.map { String(cString: $0) }
    }

    func bytes(_ data: ProtobufCBinaryData) -> [UInt8] {
      guard data.len > 0, let base = data.data else { return [] }
      return Array(UnsafeBufferPointer(start: base, count: data.len))
    }

    func array<T>(_ pointer: UnsafeMutablePointer<T>?, _ count: Int) -> [T] {
      guard count > 0, let pointer else { return [] }
      return Array(UnsafeBufferPointer(start: pointer, count: count))
    }

    /// Dereferences a protobuf-c repeated message field.
    func messages<T>(_ pointer: UnsafeMutablePointer<UnsafeMutablePointer<T>?>?, _ count: Int) -> [T] {
      array(pointer, count).compactMap { $0?.pointee }
    }

    func unknownFields(_ base: ProtobufCMessage) -> [UnknownField] {
      array(base.unknown_fields, Int(base.n_unknown_fields)).map {
        UnknownField(tag: $0.tag, wireType: UInt8($0.wire_type.rawValue), data: array($0.data, $0.len))
      }
    }

    /// Serializes a sub-message that the IR carries whole.
    func opaque(_ base: UnsafePointer<ProtobufCMessage>) -> OpaqueMessage {
      let size = protobuf_c_message_get_packed_size(base)
      var out = [UInt8](repeating: 0, count: size)
      _ = out.withUnsafeMutableBufferPointer { protobuf_c_message_pack(base, $0.baseAddress) }
      return OpaqueMessage(bytes: out)
    }

    func opaqueList<T>(_ pointer: UnsafeMutablePointer<UnsafeMutablePointer<T>?>?, _ count: Int) -> [OpaqueMessage] {
      array(pointer, count).compactMap { element in
        element.map { opaque(UnsafeRawPointer($0).assumingMemoryBound(to: ProtobufCMessage.self)) }
      }
    }

    func readModel(_ m: Onnx__ModelProto) throws -> Model {
      var model = Model()
      model.irVersion = m.has_ir_version != 0 ? m.ir_version : nil
      model.opsetImports = messages(m.opset_import, m.n_opset_import).map {
        OperatorSetID(domain: string($0.domain), version: $0.has_version != 0 ? $0.version : 0)
      }
      model.producerName = string(m.producer_name)
      model.producerVersion = string(m.producer_version)
      model.domain = string(m.domain)
      model.modelVersion = m.has_model_version != 0 ? m.model_version : nil
      model.docString = string(m.doc_string)
      model.graph = try m.graph.map { try readGraph($0.pointee) }
      model.metadataProps = messages(m.metadata_props, m.n_metadata_props).map(readPair)
      model.trainingInfo = opaqueList(m.training_info, m.n_training_info)
      model.functions = opaqueList(m.functions, m.n_functions)
      model.unknownFields = unknownFields(m.base)
      return model
    }

    func readPair(_ entry: Onnx__StringStringEntryProto) -> StringPair {
      StringPair(key: string(entry.key) ?? "", value: string(entry.value) ?? "")
    }

    func readGraph(_ g: Onnx__GraphProto) throws -> Graph {
      var graph = Graph()
      graph.name = string(g.name)
      graph.docString = string(g.doc_string)
      graph.nodes = try messages(g.node, g.n_node).map(readNode)
      graph.initializers = try messages(g.initializer, g.n_initializer).map(readTensor)
      graph.sparseInitializers = opaqueList(g.sparse_initializer, g.n_sparse_initializer)
      graph.inputs = messages(g.input, g.n_input).map(readValueInfo)
      graph.outputs = messages(g.output, g.n_output).map(readValueInfo)
      graph.valueInfo = messages(g.value_info, g.n_value_info).map(readValueInfo)
      graph.quantizationAnnotations = opaqueList(g.quantization_annotation, g.n_quantization_annotation)
      graph.unknownFields = unknownFields(g.base)
      return graph
    }

    func readNode(_ n: Onnx__NodeProto) throws -> Node {
      var node = Node(
        name: string(n.name) ?? "", opType: string(n.op_type) ?? "", domain: string(n.domain) ?? "",
        inputs: array(n.input, n.n_input).map { string($0) ?? "" },
        outputs: array(n.output, n.n_output).map { string($0) ?? "" },
        attributes: try messages(n.attribute, n.n_attribute).map(readAttribute),
        docString: string(n.doc_string))
      node.unknownFields = unknownFields(n.base)
      return node
    }

    func readAttribute(_ a: Onnx__AttributeProto) throws -> Attribute {
      let declared = a.has_type != 0 ? Int32(bitPattern: a.type.rawValue) : inferredAttributeType(a)
      let value: AttributeValue
      switch declared {
      case 1: value = .float(a.f)
      case 2: value = .int(a.i)
      case 3: value = .string(bytes(a.s))
      case 4: value = try a.t.map { .tensor(try readTensor($0.pointee)) } ?? .undefined
      case 5: value = try a.g.map { .graph(try readGraph($0.pointee)) } ?? .undefined
      case 6: value = .floats(array(a.floats, a.n_floats))
      case 7: value = .ints(array(a.ints, a.n_ints))
      case 8: value = .strings(array(a.strings, a.n_strings).map(bytes))
      case 9: value = .tensors(try messages(a.tensors, a.n_tensors).map(readTensor))
      case 10: value = .graphs(try messages(a.graphs, a.n_graphs).map(readGraph))
      case 11:
        value =
          a.sparse_tensor.map {
            .sparseTensor(opaque(UnsafeRawPointer($0).assumingMemoryBound(to: ProtobufCMessage.self)))
          } ?? .undefined
      case 12: value = .sparseTensors(opaqueList(a.sparse_tensors, a.n_sparse_tensors))
      case 13:
        value =
          a.tp.map { .typeProto(opaque(UnsafeRawPointer($0).assumingMemoryBound(to: ProtobufCMessage.self))) }
          ?? .undefined
      case 14: value = .typeProtos(opaqueList(a.type_protos, a.n_type_protos))
      default: value = .undefined
      }
      var attribute = Attribute(
        name: string(a.name) ?? "", value: value, docString: string(a.doc_string), refAttrName: string(a.ref_attr_name))
      attribute.unknownFields = unknownFields(a.base)
      return attribute
    }

    /// Models written before `AttributeProto.type` existed say the kind only by the field they set.
    func inferredAttributeType(_ a: Onnx__AttributeProto) -> Int32 {
      if a.has_f != 0 { return 1 }
      if a.has_i != 0 { return 2 }
      if a.has_s != 0 { return 3 }
      if a.t != nil { return 4 }
      if a.g != nil { return 5 }
      if a.sparse_tensor != nil { return 11 }
      if a.tp != nil { return 13 }
      if a.n_floats > 0 { return 6 }
      if a.n_ints > 0 { return 7 }
      if a.n_strings > 0 { return 8 }
      if a.n_tensors > 0 { return 9 }
      if a.n_graphs > 0 { return 10 }
      if a.n_sparse_tensors > 0 { return 12 }
      if a.n_type_protos > 0 { return 14 }
      return 0
    }

    func readValueInfo(_ v: Onnx__ValueInfoProto) -> ValueInfo {
      var info = ValueInfo(
        name: string(v.name) ?? "", type: v.type.map { readType($0) }, docString: string(v.doc_string))
      info.unknownFields = unknownFields(v.base)
      return info
    }

    func readType(_ pointer: UnsafeMutablePointer<Onnx__TypeProto>) -> ValueType {
      let t = pointer.pointee
      // Only plain tensor types without unknown fields are modelled; anything else is kept whole.
      if t.value_case == ONNX__TYPE_PROTO__VALUE_TENSOR_TYPE, let tensor = t.tensor_type?.pointee,
        t.base.n_unknown_fields == 0, tensor.base.n_unknown_fields == 0
      {
        let shape: [ShapeDimension]? = tensor.shape.map { shape in
          messages(shape.pointee.dim, shape.pointee.n_dim).map { d in
            switch d.value_case {
            case ONNX__TENSOR_SHAPE_PROTO__DIMENSION__VALUE_DIM_VALUE:
              return ShapeDimension(value: d.dim_value, denotation: string(d.denotation))
            case ONNX__TENSOR_SHAPE_PROTO__DIMENSION__VALUE_DIM_PARAM:
              return ShapeDimension(param: string(d.dim_param), denotation: string(d.denotation))
            default:
              return ShapeDimension(denotation: string(d.denotation))
            }
          }
        }
        return .tensor(
          elementType: DataType(rawValue: tensor.has_elem_type != 0 ? tensor.elem_type : 0), shape: shape,
          denotation: string(t.denotation))
      }
      return .other(opaque(UnsafeRawPointer(pointer).assumingMemoryBound(to: ProtobufCMessage.self)))
    }

    /// Reads a tensor, checking its dims and the size of its data against its dtype before copying.
    func readTensor(_ t: Onnx__TensorProto) throws -> TensorValue {
      let type = DataType(rawValue: t.has_data_type != 0 ? t.data_type : 0)
      var tensor = TensorValue(name: string(t.name), dataType: type, dims: array(t.dims, t.n_dims))
      let label = tensor.name ?? "(unnamed)"
      if let negative = tensor.dims.first(where: { $0 < 0 }) {
        throw ONNXError.invalidTensor(
          file: file, tensor: label, problem: "dimension \(negative) in dims \(tensor.shapeDescription) is negative")
      }
      guard let size = TensorValue.checkedSize(dims: tensor.dims, dataType: type) else {
        throw ONNXError.invalidTensor(
          file: file, tensor: label,
          problem: "dims \(tensor.shapeDescription) of \(type) overflow: the element count or byte size exceeds 2^63")
      }
      tensor.docString = string(t.doc_string)
      if let segment = t.segment?.pointee {
        tensor.segment = (segment.has_begin != 0 ? segment.begin : 0, segment.has_end != 0 ? segment.end : 0)
      }
      tensor.unknownFields = unknownFields(t.base)
      tensor.externalData = messages(t.external_data, t.n_external_data).map(readPair)
      if t.has_data_location != 0 && t.data_location == ONNX__TENSOR_PROTO__DATA_LOCATION__EXTERNAL {
        tensor.encoding = .external
        return tensor
      }
      if t.has_raw_data != 0 {
        if type == .string || type == .undefined {
          throw ONNXError.invalidTensor(
            file: file, tensor: label, problem: "raw_data cannot hold \(type) elements (the spec forbids it); use string_data")
        }
        if type.byteSize != nil && Int64(t.raw_data.len) != size.bytes {
          throw ONNXError.invalidTensor(
            file: file, tensor: label,
            problem:
              "raw_data has \(t.raw_data.len) bytes, but dims \(tensor.shapeDescription) of \(type) need \(size.bytes)")
        }
        tensor.encoding = .raw
        tensor.bytes = bytes(t.raw_data)
        return tensor
      }
      tensor.encoding = .typed
      let field = TypedPayload.field(for: type)
      let stored: Int
      switch field {
      case .floats: stored = t.n_float_data
      case .int32s: stored = t.n_int32_data
      case .int64s: stored = t.n_int64_data
      case .doubles: stored = t.n_double_data
      case .uint64s: stored = t.n_uint64_data
      case .strings: stored = t.n_string_data
      case .none: stored = 0
      }
      let needed = size.elements * Int64(TypedPayload.valuesPerElement(type))
      if let field, Int64(stored) != needed {
        throw ONNXError.invalidTensor(
          file: file, tensor: label,
          problem:
            "\(field.rawValue) has \(stored) values, but dims \(tensor.shapeDescription) of \(type) need \(needed)")
      }
      switch field {
      case .floats: tensor.bytes = TypedPayload.pack(array(t.float_data, t.n_float_data), as: type)
      case .int32s: tensor.bytes = TypedPayload.pack(array(t.int32_data, t.n_int32_data), as: type)
      case .int64s: tensor.bytes = TypedPayload.pack(array(t.int64_data, t.n_int64_data), as: type)
      case .doubles: tensor.bytes = TypedPayload.pack(array(t.double_data, t.n_double_data), as: type)
      case .uint64s: tensor.bytes = TypedPayload.pack(array(t.uint64_data, t.n_uint64_data), as: type)
      case .strings: tensor.strings = array(t.string_data, t.n_string_data).map(bytes)
      case .none: break
      }
      return tensor
    }
  }

  // MARK: writing

  /// Encodes `model` as `ModelProto` bytes. External tensors must already carry their
  /// `externalData` entries; their bytes are not written here.
  static func encodeModel(_ model: Model) -> [UInt8] {
    let arena = Arena()
    defer { arena.release() }
    let message = arena.model(model)
    let base = UnsafeRawPointer(message).assumingMemoryBound(to: ProtobufCMessage.self)
    var out = [UInt8](repeating: 0, count: protobuf_c_message_get_packed_size(base))
    _ = out.withUnsafeMutableBufferPointer { protobuf_c_message_pack(base, $0.baseAddress) }
    return out
  }

  /// Owns every C allocation made while building one message tree for packing.
  private final class Arena {
    private var allocations: [UnsafeMutableRawPointer] = []
    private var unpacked: [UnsafeMutablePointer<ProtobufCMessage>] = []

    func release() {
      for pointer in allocations { free(pointer) }
      for message in unpacked { protobuf_c_message_free_unpacked(message, nil) }
    }

    private func allocate<T>(_ type: T.Type, count: Int) -> UnsafeMutablePointer<T> {
      let raw = calloc(max(count, 1), MemoryLayout<T>.stride)!
      allocations.append(raw)
      return raw.bindMemory(to: T.self, capacity: max(count, 1))
    }

    private func copy<T>(_ values: [T]) -> UnsafeMutablePointer<T>? {
      guard !values.isEmpty else { return nil }
      let pointer = allocate(T.self, count: values.count)
      values.withUnsafeBufferPointer { pointer.initialize(from: $0.baseAddress!, count: values.count) }
      return pointer
    }

    private func cString(_ value: String?) -> UnsafeMutablePointer<CChar>? {
      guard let value, let pointer = strdup(value) else { return nil }
      allocations.append(pointer)
      return pointer
    }

    private func binary(_ bytes: [UInt8]) -> ProtobufCBinaryData {
      ProtobufCBinaryData(len: bytes.count, data: copy(bytes))
    }

    private func message<T>(_ type: T.Type, _ initialize: (UnsafeMutablePointer<T>) -> Void) -> UnsafeMutablePointer<T>
    {
      let pointer = allocate(T.self, count: 1)
      initialize(pointer)
      return pointer
    }

    private func list<T, U>(_ values: [T], _ make: (T) -> UnsafeMutablePointer<U>) -> (
      Int, UnsafeMutablePointer<UnsafeMutablePointer<U>?>?
    ) {
      guard !values.isEmpty else { return (0, nil) }
      let pointer = allocate(UnsafeMutablePointer<U>?.self, count: values.count)
      for (index, value) in values.enumerated() { pointer[index] = make(value) }
      return (values.count, pointer)
    }

    private func strings(_ values: [String]) -> (Int, UnsafeMutablePointer<UnsafeMutablePointer<CChar>?>?) {
      guard !values.isEmpty else { return (0, nil) }
      let pointer = allocate(UnsafeMutablePointer<CChar>?.self, count: values.count)
      for (index, value) in values.enumerated() { pointer[index] = cString(value) }
      return (values.count, pointer)
    }

    private func setUnknownFields(_ base: inout ProtobufCMessage, _ fields: [UnknownField]) {
      guard !fields.isEmpty else { return }
      base.n_unknown_fields = UInt32(fields.count)
      base.unknown_fields = copy(
        fields.map {
          ProtobufCMessageUnknownField(
            tag: $0.tag, wire_type: ProtobufCWireType(rawValue: UInt32($0.wireType)), len: $0.data.count,
            data: copy($0.data))
        })
    }

    /// Decodes an opaque message back into C structs owned by protobuf-c (freed in `release`).
    private func unpack<T>(_ opaque: OpaqueMessage, _ descriptor: UnsafePointer<ProtobufCMessageDescriptor>, as: T.Type)
      -> UnsafeMutablePointer<T>
    {
      let decoded = opaque.bytes.withUnsafeBufferPointer {
        protobuf_c_message_unpack(descriptor, nil, $0.count, $0.baseAddress)
      }
      // The bytes were produced by protobuf-c's own packer when the model was read.
      guard let decoded else { fatalError("opaque \(String(cString: descriptor.pointee.name)) does not decode") }
      unpacked.append(decoded)
      return UnsafeMutableRawPointer(decoded).assumingMemoryBound(to: T.self)
    }

    private func opaqueList<U>(_ values: [OpaqueMessage], _ descriptor: UnsafePointer<ProtobufCMessageDescriptor>)
      -> (Int, UnsafeMutablePointer<UnsafeMutablePointer<U>?>?)
    {
      list(values) { unpack($0, descriptor, as: U.self) }
    }

    func model(_ model: Model) -> UnsafeMutablePointer<Onnx__ModelProto> {
      message(Onnx__ModelProto.self) { m in
        onnx__model_proto__init(m)
        if let version = model.irVersion {
          m.pointee.has_ir_version = 1
          m.pointee.ir_version = version
        }
        (m.pointee.n_opset_import, m.pointee.opset_import) = list(model.opsetImports) { opset in
          message(Onnx__OperatorSetIdProto.self) { o in
            onnx__operator_set_id_proto__init(o)
            o.pointee.domain = cString(opset.domain)
            o.pointee.has_version = 1
            o.pointee.version = opset.version
          }
        }
        m.pointee.producer_name = cString(model.producerName)
        m.pointee.producer_version = cString(model.producerVersion)
        m.pointee.domain = cString(model.domain)
        if let version = model.modelVersion {
          m.pointee.has_model_version = 1
          m.pointee.model_version = version
        }
        m.pointee.doc_string = cString(model.docString)
        m.pointee.graph = model.graph.map(graph)
        (m.pointee.n_metadata_props, m.pointee.metadata_props) = list(model.metadataProps, pair)
        withUnsafePointer(to: onnx__training_info_proto__descriptor) { d in
          (m.pointee.n_training_info, m.pointee.training_info) = opaqueList(model.trainingInfo, d)
        }
        withUnsafePointer(to: onnx__function_proto__descriptor) { d in
          (m.pointee.n_functions, m.pointee.functions) = opaqueList(model.functions, d)
        }
        setUnknownFields(&m.pointee.base, model.unknownFields)
      }
    }

    private func pair(_ entry: StringPair) -> UnsafeMutablePointer<Onnx__StringStringEntryProto> {
      message(Onnx__StringStringEntryProto.self) { e in
        onnx__string_string_entry_proto__init(e)
        e.pointee.key = cString(entry.key)
        e.pointee.value = cString(entry.value)
      }
    }

    private func graph(_ graph: Graph) -> UnsafeMutablePointer<Onnx__GraphProto> {
      message(Onnx__GraphProto.self) { g in
        onnx__graph_proto__init(g)
        (g.pointee.n_node, g.pointee.node) = list(graph.nodes, node)
        g.pointee.name = cString(graph.name)
        (g.pointee.n_initializer, g.pointee.initializer) = list(graph.initializers, tensor)
        withUnsafePointer(to: onnx__sparse_tensor_proto__descriptor) { d in
          (g.pointee.n_sparse_initializer, g.pointee.sparse_initializer) = opaqueList(graph.sparseInitializers, d)
        }
        g.pointee.doc_string = cString(graph.docString)
        (g.pointee.n_input, g.pointee.input) = list(graph.inputs, valueInfo)
        (g.pointee.n_output, g.pointee.output) = list(graph.outputs, valueInfo)
        (g.pointee.n_value_info, g.pointee.value_info) = list(graph.valueInfo, valueInfo)
        withUnsafePointer(to: onnx__tensor_annotation__descriptor) { d in
          (g.pointee.n_quantization_annotation, g.pointee.quantization_annotation) =
            opaqueList(graph.quantizationAnnotations, d)
        }
        setUnknownFields(&g.pointee.base, graph.unknownFields)
      }
    }

    private func node(_ node: Node) -> UnsafeMutablePointer<Onnx__NodeProto> {
      message(Onnx__NodeProto.self) { n in
        onnx__node_proto__init(n)
        (n.pointee.n_input, n.pointee.input) = strings(node.inputs)
        (n.pointee.n_output, n.pointee.output) = strings(node.outputs)
        n.pointee.name = node.name.isEmpty ? nil : cString(node.name)
        n.pointee.op_type = cString(node.opType)
        n.pointee.domain = node.domain.isEmpty ? nil : cString(node.domain)
        (n.pointee.n_attribute, n.pointee.attribute) = list(node.attributes, attribute)
        n.pointee.doc_string = cString(node.docString)
        setUnknownFields(&n.pointee.base, node.unknownFields)
      }
    }

    private func attribute(_ attribute: Attribute) -> UnsafeMutablePointer<Onnx__AttributeProto> {
      message(Onnx__AttributeProto.self) { a in
        onnx__attribute_proto__init(a)
        a.pointee.name = cString(attribute.name)
        a.pointee.ref_attr_name = cString(attribute.refAttrName)
        a.pointee.doc_string = cString(attribute.docString)
        if attribute.value.typeCode != 0 {
          a.pointee.has_type = 1
          a.pointee.type = Onnx__AttributeProto__AttributeType(rawValue: UInt32(attribute.value.typeCode))
        }
        switch attribute.value {
        case .undefined: break
        case .float(let value):
          a.pointee.has_f = 1
          a.pointee.f = value
        case .int(let value):
          a.pointee.has_i = 1
          a.pointee.i = value
        case .string(let value):
          a.pointee.has_s = 1
          a.pointee.s = binary(value)
        case .tensor(let value): a.pointee.t = tensor(value)
        case .graph(let value): a.pointee.g = graph(value)
        case .sparseTensor(let value):
          a.pointee.sparse_tensor = withUnsafePointer(to: onnx__sparse_tensor_proto__descriptor) {
            unpack(value, $0, as: Onnx__SparseTensorProto.self)
          }
        case .typeProto(let value):
          a.pointee.tp = withUnsafePointer(to: onnx__type_proto__descriptor) {
            unpack(value, $0, as: Onnx__TypeProto.self)
          }
        case .floats(let values):
          a.pointee.n_floats = values.count
          a.pointee.floats = copy(values)
        case .ints(let values):
          a.pointee.n_ints = values.count
          a.pointee.ints = copy(values)
        case .strings(let values):
          a.pointee.n_strings = values.count
          a.pointee.strings = copy(values.map(binary))
        case .tensors(let values): (a.pointee.n_tensors, a.pointee.tensors) = list(values, tensor)
        case .graphs(let values): (a.pointee.n_graphs, a.pointee.graphs) = list(values, graph)
        case .sparseTensors(let values):
          withUnsafePointer(to: onnx__sparse_tensor_proto__descriptor) { d in
            (a.pointee.n_sparse_tensors, a.pointee.sparse_tensors) = opaqueList(values, d)
          }
        case .typeProtos(let values):
          withUnsafePointer(to: onnx__type_proto__descriptor) { d in
            (a.pointee.n_type_protos, a.pointee.type_protos) = opaqueList(values, d)
          }
        }
        setUnknownFields(&a.pointee.base, attribute.unknownFields)
      }
    }

    private func valueInfo(_ info: ValueInfo) -> UnsafeMutablePointer<Onnx__ValueInfoProto> {
      message(Onnx__ValueInfoProto.self) { v in
        onnx__value_info_proto__init(v)
        v.pointee.name = cString(info.name)
        v.pointee.type = info.type.map(type)
        v.pointee.doc_string = cString(info.docString)
        setUnknownFields(&v.pointee.base, info.unknownFields)
      }
    }

    private func type(_ type: ValueType) -> UnsafeMutablePointer<Onnx__TypeProto> {
      switch type {
      case .other(let opaque):
        return withUnsafePointer(to: onnx__type_proto__descriptor) { unpack(opaque, $0, as: Onnx__TypeProto.self) }
      case .tensor(let elementType, let shape, let denotation):
        return message(Onnx__TypeProto.self) { t in
          onnx__type_proto__init(t)
          t.pointee.denotation = cString(denotation)
          t.pointee.value_case = ONNX__TYPE_PROTO__VALUE_TENSOR_TYPE
          t.pointee.tensor_type = message(Onnx__TypeProto__Tensor.self) { tensor in
            onnx__type_proto__tensor__init(tensor)
            if elementType != .undefined {
              tensor.pointee.has_elem_type = 1
              tensor.pointee.elem_type = elementType.rawValue
            }
            tensor.pointee.shape = shape.map { dims in
              message(Onnx__TensorShapeProto.self) { s in
                onnx__tensor_shape_proto__init(s)
                (s.pointee.n_dim, s.pointee.dim) = list(dims) { dim in
                  message(Onnx__TensorShapeProto__Dimension.self) { d in
                    onnx__tensor_shape_proto__dimension__init(d)
                    d.pointee.denotation = cString(dim.denotation)
                    if let value = dim.value {
                      d.pointee.value_case = ONNX__TENSOR_SHAPE_PROTO__DIMENSION__VALUE_DIM_VALUE
                      d.pointee.dim_value = value
                    } else if let param = dim.param {
                      d.pointee.value_case = ONNX__TENSOR_SHAPE_PROTO__DIMENSION__VALUE_DIM_PARAM
                      d.pointee.dim_param = cString(param)
                    }
                  }
                }
              }
            }
          }
        }
      }
    }

    func tensor(_ tensor: TensorValue) -> UnsafeMutablePointer<Onnx__TensorProto> {
      message(Onnx__TensorProto.self) { t in
        onnx__tensor_proto__init(t)
        t.pointee.n_dims = tensor.dims.count
        t.pointee.dims = copy(tensor.dims)
        if tensor.dataType != .undefined {
          t.pointee.has_data_type = 1
          t.pointee.data_type = tensor.dataType.rawValue
        }
        if let segment = tensor.segment {
          t.pointee.segment = message(Onnx__TensorProto__Segment.self) { s in
            onnx__tensor_proto__segment__init(s)
            s.pointee.has_begin = 1
            s.pointee.begin = segment.begin
            s.pointee.has_end = 1
            s.pointee.end = segment.end
          }
        }
        t.pointee.name = cString(tensor.name)
        t.pointee.doc_string = cString(tensor.docString)
        (t.pointee.n_external_data, t.pointee.external_data) = list(tensor.externalData, pair)
        switch tensor.encoding {
        case .external:
          t.pointee.has_data_location = 1
          t.pointee.data_location = ONNX__TENSOR_PROTO__DATA_LOCATION__EXTERNAL
        case .raw:
          if tensor.dataType == .string {
            t.pointee.n_string_data = tensor.strings.count
            t.pointee.string_data = copy(tensor.strings.map(binary))
          } else {
            t.pointee.has_raw_data = 1
            t.pointee.raw_data = binary(tensor.bytes)
          }
        case .typed:
          switch TypedPayload.field(for: tensor.dataType) {
          case .floats:
            let values: [Float] = TypedPayload.unpack(tensor.bytes, as: tensor.dataType)
            (t.pointee.n_float_data, t.pointee.float_data) = (values.count, copy(values))
          case .int32s:
            let values: [Int32] = TypedPayload.unpack(tensor.bytes, as: tensor.dataType)
            (t.pointee.n_int32_data, t.pointee.int32_data) = (values.count, copy(values))
          case .int64s:
            let values: [Int64] = TypedPayload.unpack(tensor.bytes, as: tensor.dataType)
            (t.pointee.n_int64_data, t.pointee.int64_data) = (values.count, copy(values))
          case .doubles:
            let values: [Double] = TypedPayload.unpack(tensor.bytes, as: tensor.dataType)
            (t.pointee.n_double_data, t.pointee.double_data) = (values.count, copy(values))
          case .uint64s:
            let values: [UInt64] = TypedPayload.unpack(tensor.bytes, as: tensor.dataType)
            (t.pointee.n_uint64_data, t.pointee.uint64_data) = (values.count, copy(values))
          case .strings:
            (t.pointee.n_string_data, t.pointee.string_data) = (tensor.strings.count, copy(tensor.strings.map(binary)))
          case .none:
            break
          }
        }
        setUnknownFields(&t.pointee.base, tensor.unknownFields)
      }
    }
  }
}
