import DistillCore
import Foundation

/// Limits applied while reading a model.
public struct ImportOptions: Sendable {
  /// A protobuf message cannot exceed 2 GiB; larger weights belong in external data.
  public var maxFileBytes: Int64 = Int64(Int32.max)
  /// Largest total of tensor data (external data included) the import may allocate.
  public var memoryBudget: Int64 = Int64(Double(ProcessInfo.processInfo.physicalMemory) * 0.8)
  public init() {}
}

/// Options for writing a model.
public struct ExportOptions: Sendable {
  /// When the tensors stored inside the protobuf would exceed this, the largest initializers move
  /// to an external-data file beside the output (`OUT.onnx.data`). Protobuf's own limit is 2 GiB.
  public var maxInlineBytes: Int64 = Int64(Int32.max) - (64 << 20)
  public init() {}
}

/// Reading and writing ONNX model files.
public enum ModelFile {
  /// Reads, decodes and validates the model at `path`, loading its external data.
  public static func read(_ path: String, options: ImportOptions = ImportOptions()) throws -> Model {
    var status = stat()
    guard stat(path, &status) == 0 else {
      throw ONNXError.unreadable(file: path, reason: String(cString: strerror(errno)))
    }
    guard (status.st_mode & S_IFMT) == S_IFREG else {
      throw ONNXError.unreadable(file: path, reason: "not a regular file")
    }
    if Int64(status.st_size) > options.maxFileBytes {
      throw ONNXError.fileTooLarge(file: path, bytes: Int64(status.st_size), limit: options.maxFileBytes)
    }
    guard let data = FileManager.default.contents(atPath: path) else {
      throw ONNXError.unreadable(file: path, reason: "permission denied or I/O error")
    }
    let directory = URL(fileURLWithPath: path).deletingLastPathComponent()
    return try decode([UInt8](data), file: path, directory: directory, options: options)
  }

  /// Decodes and validates model bytes. External data is resolved against `directory`; without
  /// one, a model that uses external data is rejected.
  public static func decode(
    _ bytes: [UInt8], file: String = "<memory>", directory: URL? = nil, options: ImportOptions = ImportOptions()
  ) throws -> Model {
    if Int64(bytes.count) > options.maxFileBytes {
      throw ONNXError.fileTooLarge(file: file, bytes: Int64(bytes.count), limit: options.maxFileBytes)
    }
    var model = try ProtobufBridge.decodeModel(bytes, file: file)
    if model.irVersion == nil && model.opsetImports.isEmpty && model.graph == nil {
      throw ONNXError.malformed(
        file: file, detail: "it holds none of the fields of an ONNX ModelProto (ir_version, opset_import, graph)")
    }
    guard model.irVersion != nil else {
      throw ONNXError.missingField(
        file: file, field: "ir_version", hint: "every ONNX model must say which IR version it targets")
    }
    guard !model.opsetImports.isEmpty else {
      throw ONNXError.missingField(
        file: file, field: "opset_import", hint: "every ONNX model must import at least one operator set")
    }
    guard var graph = model.graph else {
      throw ONNXError.missingField(file: file, field: "graph", hint: "there is nothing to run")
    }
    let reader = ExternalDataReader(file: file, directory: directory, memoryBudget: options.memoryBudget)
    var total: Int64 = 0
    try graph.updateTensors { tensor in
      if tensor.encoding == .external { try reader.load(&tensor) }
      total += Int64(tensor.bytes.count)
      if total > options.memoryBudget {
        throw ONNXError.overBudget(file: file, what: "the model's tensors", bytes: total, limit: options.memoryBudget)
      }
    }
    model.graph = try GraphValidator(file: file).validated(graph)
    return model
  }

  /// The files a model read from `path` came from: the model and its external-data files.
  public static func sourceFiles(of model: Model, readFrom path: String) -> [String] {
    let directory = URL(fileURLWithPath: path).deletingLastPathComponent()
    let locations = (model.graph?.allTensors ?? []).filter { $0.encoding == .external }.compactMap { tensor in
      tensor.externalData.first { $0.key == "location" }?.value
    }
    return [path] + Set(locations).map { directory.appendingPathComponent($0).path }
  }

  /// Encodes `model` (all tensors inline) as ModelProto bytes.
  public static func encode(_ model: Model) -> [UInt8] {
    var inline = model
    inline.graph?.updateTensors { tensor in
      if tensor.encoding == .external {
        tensor.encoding = .raw
        tensor.externalData = []
      }
    }
    return ProtobufBridge.encodeModel(inline)
  }

  /// Reads a `TensorProto` file (`input_0.pb`, `output_0.pb`, ...).
  public static func readTensor(_ path: String) throws -> TensorValue {
    guard let data = FileManager.default.contents(atPath: path) else {
      throw ONNXError.unreadable(file: path, reason: FileManager.default.fileExists(atPath: path) ? "permission denied" : "no such file")
    }
    let tensor = try ProtobufBridge.decodeTensor([UInt8](data), file: path)
    if tensor.encoding == .external {
      throw ONNXError.invalidTensor(file: path, tensor: tensor.name ?? "", problem: "a tensor file cannot use external data")
    }
    return tensor
  }

  /// Writes a `TensorProto` file atomically.
  public static func writeTensor(_ tensor: TensorValue, to path: String) throws {
    try atomicWrite(ProtobufBridge.encodeTensor(tensor), to: URL(fileURLWithPath: path).standardizedFileURL)
  }

  /// Writes `model` to `path` atomically (temporary file in the same directory, fsync, rename).
  /// Tensors that were external stay external, and when the inline tensors would pass
  /// `options.maxInlineBytes` the largest initializers join them, in `<path>.data` beside the output.
  /// Refuses to replace any file in `protecting` (the input model and its data files).
  public static func write(
    _ model: Model, to path: String, protecting: [String] = [], options: ExportOptions = ExportOptions()
  ) throws {
    let output = URL(fileURLWithPath: path).standardizedFileURL
    let dataURL = URL(fileURLWithPath: output.path + ".data")
    let protected = Set(protecting.map { URL(fileURLWithPath: $0).resolvingSymlinksInPath().standardizedFileURL.path })
    for target in [output, dataURL] where protected.contains(target.resolvingSymlinksInPath().standardizedFileURL.path)
    {
      throw ONNXError.refusedOverwrite(file: target.path)
    }
    guard var graph = model.graph else { throw ONNXError.missingField(file: path, field: "graph", hint: "") }

    var external = Set<Int>()
    var inlineBytes: Int64 = 0
    let tensors = graph.allTensors
    for (index, tensor) in tensors.enumerated() {
      if tensor.encoding == .external { external.insert(index) } else { inlineBytes += Int64(tensor.bytes.count) }
    }
    if inlineBytes > options.maxInlineBytes {
      let initializerCount = graph.initializers.count
      for index in (0..<initializerCount).sorted(by: { tensors[$0].bytes.count > tensors[$1].bytes.count }) {
        guard inlineBytes > options.maxInlineBytes else { break }
        if external.insert(index).inserted { inlineBytes -= Int64(tensors[index].bytes.count) }
      }
    }

    var blob: [UInt8] = []
    var position = 0
    try graph.updateTensors { tensor in
      defer { position += 1 }
      guard external.contains(position) else {
        if tensor.encoding == .external { tensor.encoding = .raw }
        return
      }
      guard tensor.dataType.byteSize != nil else {
        throw ONNXError.writeFailed(
          file: path, reason: "tensor '\(tensor.name ?? "")' of \(tensor.dataType) cannot go to external data")
      }
      blob.append(contentsOf: [UInt8](repeating: 0, count: (64 - blob.count % 64) % 64))
      let kept = tensor.externalData.filter { !["location", "offset", "length", "checksum"].contains($0.key) }
      tensor.externalData =
        [
          StringPair(key: "location", value: dataURL.lastPathComponent),
          StringPair(key: "offset", value: String(blob.count)),
          StringPair(key: "length", value: String(tensor.bytes.count)),
        ] + kept
      tensor.encoding = .external
      blob.append(contentsOf: tensor.bytes)
    }
    var written = model
    written.graph = graph
    if !external.isEmpty { try atomicWrite(blob, to: dataURL) }
    try atomicWrite(ProtobufBridge.encodeModel(written), to: output)
  }

  /// Writes through a temporary file in the target's directory, fsyncs it, renames it over the
  /// target and fsyncs the directory; on failure the target is left as it was.
  static func atomicWrite(_ bytes: [UInt8], to url: URL) throws {
    let directory = url.deletingLastPathComponent().path
    let temporary = directory + "/.\(url.lastPathComponent).tmp-\(getpid())"
    do {
      try writeSynced(bytes, to: temporary)
    } catch {
      unlink(temporary)
      throw error
    }
    guard rename(temporary, url.path) == 0 else {
      let renameError = ONNXError.writeFailed(file: url.path, reason: "renaming \(temporary): \(String(cString: strerror(errno)))")
      unlink(temporary)
      throw renameError
    }
    syncDirectory(of: url.path)
  }

  /// Creates or truncates `path`, writes `bytes` and fsyncs the file.
  public static func writeSynced(_ bytes: [UInt8], to path: String) throws {
    func fail(_ what: String) -> ONNXError {
      .writeFailed(file: path, reason: "\(what): \(String(cString: strerror(errno)))")
    }
    let descriptor = open(path, O_WRONLY | O_CREAT | O_TRUNC, 0o644)
    guard descriptor >= 0 else { throw fail("cannot create it") }
    var written = 0
    let ok = bytes.withUnsafeBytes { raw -> Bool in
      while written < raw.count {
        let result = Foundation.write(descriptor, raw.baseAddress! + written, min(raw.count - written, 1 << 30))
        if result <= 0 { return false }
        written += result
      }
      return fsync(descriptor) == 0
    }
    let error = fail("writing")
    close(descriptor)
    guard ok else { throw error }
  }

  /// fsyncs the directory holding `path`, so a rename into it survives a crash.
  public static func syncDirectory(of path: String) {
    let descriptor = open(URL(fileURLWithPath: path).deletingLastPathComponent().path, O_RDONLY)
    if descriptor >= 0 {
      fsync(descriptor)
      close(descriptor)
    }
  }
}
