import DistillCore
import DistillONNX
import Foundation

/// Everything a training run needs to continue exactly where it stopped: the student's parameters
/// (every float initializer, BatchNormalization running statistics included), the adapters'
/// parameters, the optimizer state, the step, the random generator state and a hash of the
/// configuration.
///
/// File format, version 1 (all integers little-endian):
///
/// | offset | size | field |
/// | --- | --- | --- |
/// | 0 | 8 | magic `DSTLCKPT` |
/// | 8 | 4 | format version (UInt32, 1) |
/// | 12 | 4 | header length H (UInt32) |
/// | 16 | 8 | payload length P (UInt64) |
/// | 24 | 8 | FNV-1a 64 checksum of the header and payload bytes (UInt64) |
/// | 32 | H | header: UTF-8 JSON (`Header`) naming each tensor's group, name, dtype, shape and payload offset |
/// | 32+H | P | payload: each tensor's elements as float32, little-endian, at its offset |
///
/// The file ends right after the payload. `dtype` is the ONNX type of the tensor in the graph; the
/// values are always stored as float32 (the precision the interpreter trains in).
public struct Checkpoint: Sendable {
  public static let magic: [UInt8] = Array("DSTLCKPT".utf8)
  public static let version: UInt32 = 1
  static let prefixLength = 32

  /// Training steps taken (updates applied or skipped).
  public var step: Int
  /// `TrainingConfig.hash` of the run that wrote it.
  public var configHash: String
  /// The random generator state(s) of the run.
  public var rngState: [UInt64]
  /// Steps in a row that ended with a non-finite loss or gradient.
  public var consecutiveNonFinite: Int
  public var student: [NamedTensor]
  public var adapters: [NamedTensor]
  public var optimizer: OptimizerState
  /// Free-form notes (model path, time...); not interpreted.
  public var metadata: [String: String]

  public init(
    step: Int, configHash: String, rngState: [UInt64], consecutiveNonFinite: Int = 0, student: [NamedTensor],
    adapters: [NamedTensor] = [], optimizer: OptimizerState, metadata: [String: String] = [:]
  ) {
    self.step = step
    self.configHash = configHash
    self.rngState = rngState
    self.consecutiveNonFinite = consecutiveNonFinite
    self.student = student
    self.adapters = adapters
    self.optimizer = optimizer
    self.metadata = metadata
  }

  struct Entry: Codable {
    var name: String
    var dtype: String
    var onnxType: Int32
    var shape: [Int]
    var offset: Int
    var count: Int
  }

  struct Header: Codable {
    var format: String
    var step: Int
    var configHash: String
    var rng: [String]
    var consecutiveNonFinite: Int
    var optimizerKind: String
    var optimizerStep: Int
    var student: [Entry]
    var adapters: [Entry]
    var optimizer: [Entry]
    var metadata: [String: String]
  }

  // MARK: Encoding

  /// The file's bytes, built in one buffer (the payload is not assembled separately first).
  public func encoded() -> [UInt8] {
    var payloadLength = 0
    func entries(_ tensors: [NamedTensor]) -> [Entry] {
      tensors.map { named in
        let tensor = named.tensor
        let entry = Entry(
          name: named.name, dtype: tensor.dtype.description, onnxType: tensor.dtype.rawValue, shape: tensor.shape,
          offset: payloadLength, count: tensor.count)
        payloadLength += 4 * tensor.count
        return entry
      }
    }
    let header = Header(
      format: "distill checkpoint", step: step, configHash: configHash,
      rng: rngState.map { String($0, radix: 16) }, consecutiveNonFinite: consecutiveNonFinite,
      optimizerKind: optimizer.kind, optimizerStep: optimizer.step, student: entries(student),
      adapters: entries(adapters), optimizer: entries(optimizer.tensors), metadata: metadata)
    let encoder = JSONEncoder()
    encoder.outputFormatting = [.sortedKeys]
    let json = [UInt8](try! encoder.encode(header))
    var bytes = Checkpoint.magic
    bytes.reserveCapacity(Checkpoint.prefixLength + json.count + payloadLength)
    Checkpoint.append(Checkpoint.version, to: &bytes)
    Checkpoint.append(UInt32(json.count), to: &bytes)
    Checkpoint.append(UInt64(payloadLength), to: &bytes)
    let checksumOffset = bytes.count
    Checkpoint.append(UInt64(0), to: &bytes)
    bytes += json
    for named in student + adapters + optimizer.tensors {
      let tensor = named.tensor
      Checkpoint.appendLittleEndian(tensor.isFloat ? tensor.floats : tensor.ints.map { Float($0) }, to: &bytes)
    }
    var checksum = FNV1a64()
    checksum.add(bytes[Checkpoint.prefixLength...])
    withUnsafeBytes(of: checksum.value.littleEndian) { bytes.replaceSubrange(checksumOffset..<(checksumOffset + 8), with: $0) }
    return bytes
  }

  /// Decodes and verifies checkpoint bytes; `file` names them in errors.
  public static func decode(_ bytes: [UInt8], file: String = "<memory>") throws -> Checkpoint {
    func fail(_ problem: String) -> TrainingError { .checkpoint(file: file, problem: problem) }
    guard bytes.count >= magic.count, Array(bytes[0..<magic.count]) == magic else {
      if bytes.isEmpty { throw fail("the file is empty (a checkpoint write was cut short?)") }
      throw fail("not a distill checkpoint (the file does not start with DSTLCKPT)")
    }
    guard bytes.count >= prefixLength else {
      throw fail("truncated: \(bytes.count) bytes, shorter than the \(prefixLength)-byte prefix")
    }
    let version: UInt32 = read(bytes, at: 8)
    guard version == Checkpoint.version else {
      throw fail("format version \(version); this build reads version \(Checkpoint.version)")
    }
    let headerLength = Int(read(bytes, at: 12) as UInt32)
    let payloadLength64: UInt64 = read(bytes, at: 16)
    let stored: UInt64 = read(bytes, at: 24)
    guard payloadLength64 <= UInt64(Int.max / 2) else { throw fail("corrupt prefix: payload length \(payloadLength64)") }
    let payloadLength = Int(payloadLength64)
    let expected = prefixLength + headerLength + payloadLength
    guard bytes.count >= expected else {
      throw fail("truncated: \(bytes.count) bytes, the checkpoint's prefix announces \(expected)")
    }
    guard bytes.count == expected else {
      throw fail("corrupt: \(bytes.count - expected) bytes after the end the prefix announces (\(expected) bytes)")
    }
    var checksum = FNV1a64()
    checksum.add(bytes[prefixLength..<expected])
    guard checksum.value == stored else {
      throw fail(
        "corrupt: checksum \(String(checksum.value, radix: 16)) of the contents does not match the stored "
          + String(stored, radix: 16))
    }
    let header: Header
    do {
      header = try JSONDecoder().decode(Header.self, from: Data(bytes[prefixLength..<(prefixLength + headerLength)]))
    } catch {
      throw fail("corrupt header: \(error)")
    }
    let payloadStart = prefixLength + headerLength
    func tensors(_ entries: [Entry], _ group: String) throws -> [NamedTensor] {
      try entries.map { entry in
        var elements = 1
        for dim in entry.shape {
          let (product, overflow) = elements.multipliedReportingOverflow(by: dim)
          guard dim >= 0, !overflow else { elements = -1; break }
          elements = product
        }
        guard elements == entry.count else {
          throw fail("corrupt header: \(group) tensor '\(entry.name)' has shape \(entry.shape) and \(entry.count) elements")
        }
        guard entry.offset >= 0, entry.offset <= payloadLength, entry.count <= (payloadLength - entry.offset) / 4 else {
          throw fail("corrupt header: \(group) tensor '\(entry.name)' lies outside the payload")
        }
        let values = readFloats(bytes, at: payloadStart + entry.offset, count: entry.count)
        let dtype = DataType(rawValue: entry.onnxType)
        if dtype.isFloatingPoint { return NamedTensor(entry.name, Tensor(shape: entry.shape, floats: values, dtype: dtype)) }
        return NamedTensor(entry.name, Tensor(shape: entry.shape, ints: values.map { Int64($0) }, dtype: dtype))
      }
    }
    var rng: [UInt64] = []
    for text in header.rng {
      guard let value = UInt64(text, radix: 16) else { throw fail("corrupt header: random state '\(text)'") }
      rng.append(value)
    }
    return Checkpoint(
      step: header.step, configHash: header.configHash, rngState: rng, consecutiveNonFinite: header.consecutiveNonFinite,
      student: try tensors(header.student, "student"), adapters: try tensors(header.adapters, "adapter"),
      optimizer: OptimizerState(
        kind: header.optimizerKind, step: header.optimizerStep, tensors: try tensors(header.optimizer, "optimizer")),
      metadata: header.metadata)
  }

  // MARK: Files

  /// Reads and verifies the checkpoint at `path`.
  public static func read(_ path: String) throws -> Checkpoint {
    guard let data = FileManager.default.contents(atPath: path) else {
      let reason = FileManager.default.fileExists(atPath: path) ? "cannot read the file" : "no such file"
      throw TrainingError.checkpoint(file: path, problem: reason)
    }
    return try decode([UInt8](data), file: path)
  }

  /// Reads the checkpoint at `path`, or, when that file is missing or unreadable, the previous one
  /// kept beside it (`path.prev`, present when a write was interrupted between its renames or
  /// when writes keep the previous checkpoint). Returns the file used and, on a fallback, why.
  public static func readLatest(_ path: String) throws -> (checkpoint: Checkpoint, file: String, warning: String?) {
    let previous = path + ".prev"
    do {
      return (try read(path), path, nil)
    } catch {
      guard FileManager.default.fileExists(atPath: previous) else { throw error }
      return (try read(previous), previous, "\(error); using the previous checkpoint \(previous)")
    }
  }

  /// Throws unless every tensor is finite.
  public func checkFinite(file: String) throws {
    for named in student + adapters + optimizer.tensors where named.tensor.isFloat {
      if let index = named.tensor.floats.firstIndex(where: { !$0.isFinite }) {
        throw TrainingError.nonFiniteWeights(file: file, tensor: named.name, index: index, value: named.tensor.floats[index])
      }
    }
  }

  /// Writes the checkpoint to `path` so that a good checkpoint exists at every moment: refuses
  /// NaN and infinite values; writes `path.tmp` in the same directory and fsyncs it; re-reads and
  /// verifies it; renames the old checkpoint to `path.prev`, the new one to `path`, fsyncs the
  /// directory; then removes `path.prev` unless `keepPrevious`. If anything fails before the
  /// renames, `path` is untouched. `beforeVerify` is called with the temporary file's path after it
  /// is written (tests use it to damage the file).
  public func write(to path: String, keepPrevious: Bool = false, beforeVerify: ((String) throws -> Void)? = nil) throws {
    try checkFinite(file: path)
    let bytes = encoded()
    let temporary = path + ".tmp", previous = path + ".prev"
    func fail(_ what: String) -> TrainingError {
      .checkpoint(file: path, problem: "cannot write: \(what): \(String(cString: strerror(errno)))")
    }
    do {
      do {
        try ModelFile.writeSynced(bytes, to: temporary)
      } catch let error as ONNXError {
        throw TrainingError.checkpoint(file: path, problem: "cannot write: \(error)")
      }
      try beforeVerify?(temporary)
      // Compared in place (no copy of the file's bytes); equal, they decode as `bytes` do.
      let same = FileManager.default.contents(atPath: temporary).map { reread in
        reread.count == bytes.count
          && reread.withUnsafeBytes { file in bytes.withUnsafeBytes { memory in memcmp(file.baseAddress!, memory.baseAddress!, memory.count) == 0 } }
      }
      guard same == true else {
        throw TrainingError.checkpoint(file: path, problem: "cannot write: re-reading \(temporary) gave other bytes than were written")
      }
      _ = try Checkpoint.decode(bytes, file: temporary)
    } catch {
      unlink(temporary)
      throw error
    }
    let hadOld = FileManager.default.fileExists(atPath: path)
    if hadOld {
      unlink(previous)
      guard rename(path, previous) == 0 else { throw fail("renaming \(path) to \(previous)") }
    }
    guard rename(temporary, path) == 0 else {
      let error = fail("renaming \(temporary) to \(path)")
      if hadOld { rename(previous, path) }
      throw error
    }
    ModelFile.syncDirectory(of: path)
    if hadOld && !keepPrevious { unlink(previous) }
  }

  // MARK: Little-endian helpers

  static func append<T: FixedWidthInteger>(_ value: T, to bytes: inout [UInt8]) {
    withUnsafeBytes(of: value.littleEndian) { bytes.append(contentsOf: $0) }
  }

  static func read<T: FixedWidthInteger>(_ bytes: [UInt8], at offset: Int) -> T {
    var value: T = 0
    for index in (0..<MemoryLayout<T>.size).reversed() { value = value << 8 | T(bytes[offset + index]) }
    return value
  }

  static func appendLittleEndian(_ values: [Float], to bytes: inout [UInt8]) {
    #if _endian(little)
      values.withUnsafeBytes { bytes.append(contentsOf: $0) }
    #else
      for value in values { append(value.bitPattern, to: &bytes) }
    #endif
  }

  static func readFloats(_ bytes: [UInt8], at offset: Int, count: Int) -> [Float] {
    #if _endian(little)
      return [Float](unsafeUninitializedCapacity: count) { buffer, initialized in
        bytes.withUnsafeBytes { raw in
          UnsafeMutableRawBufferPointer(buffer).copyMemory(from: UnsafeRawBufferPointer(rebasing: raw[offset..<(offset + 4 * count)]))
        }
        initialized = count
      }
    #else
      return (0..<count).map { Float(bitPattern: read(bytes, at: offset + 4 * $0)) }
    #endif
  }
}

/// The 64-bit FNV-1a hash ([spec](http://www.isthe.com/chongo/tech/comp/fnv/)), for checkpoint
/// checksums and configuration hashes.
public struct FNV1a64: Sendable {
  public private(set) var value: UInt64 = 0xcbf2_9ce4_8422_2325
  public init() {}

  public mutating func add<C: Collection>(_ bytes: C) where C.Element == UInt8 {
    var hash = value
    for byte in bytes {
      hash ^= UInt64(byte)
      hash &*= 0x0000_0100_0000_01b3
    }
    value = hash
  }
}
