import CTensorBoard
import Foundation

#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

/// CRC-32C (Castagnoli: reflected polynomial 0x82F63B78, initial value and final xor 0xFFFFFFFF),
/// the checksum of TFRecord framing.
public enum CRC32C {
  static let table: [UInt32] = (0..<256).map { index in
    var crc = UInt32(index)
    for _ in 0..<8 { crc = crc & 1 == 1 ? (crc >> 1) ^ 0x82F6_3B78 : crc >> 1 }
    return crc
  }

  /// The CRC-32C of `bytes`: `checksum("123456789".utf8) == 0xE3069283`.
  public static func checksum(_ bytes: UnsafeRawBufferPointer) -> UInt32 {
    var crc: UInt32 = 0xFFFF_FFFF
    table.withUnsafeBufferPointer { table in
      for byte in bytes { crc = table[Int((crc ^ UInt32(byte)) & 0xFF)] ^ (crc >> 8) }
    }
    return ~crc
  }

  /// The CRC-32C of `bytes`.
  public static func checksum<Bytes: Sequence>(_ bytes: Bytes) -> UInt32 where Bytes.Element == UInt8 {
    Array(bytes).withUnsafeBytes { checksum($0) }
  }

  /// TFRecord's masked form of a CRC, `((crc >> 15) | (crc << 17)) + 0xa282ead8` (wrapping), which
  /// keeps the checksum of data that itself holds CRCs from being trivially zero.
  public static func masked(_ crc: UInt32) -> UInt32 {
    ((crc >> 15) | (crc << 17)) &+ 0xA282_EAD8
  }
}

/// Why a TensorBoard event file could not be written or read. Messages name the file or directory.
public enum TensorBoardError: Error, CustomStringConvertible, Equatable {
  /// The log directory could not be created.
  case cannotCreateDirectory(path: String, reason: String)
  /// The event file could not be created or opened.
  case cannotOpen(path: String, reason: String)
  /// Writing to the event file failed (disk full, file system gone...).
  case writeFailed(path: String, reason: String)
  /// `add` or `flush` was called after `close`.
  case closed(path: String)
  /// A record of an event file is truncated, fails its checksum, or does not hold an `Event`.
  case corruptRecord(path: String, offset: Int, problem: String)

  public var description: String {
    switch self {
    case .cannotCreateDirectory(let path, let reason): return "\(path): cannot create the TensorBoard log directory: \(reason)"
    case .cannotOpen(let path, let reason): return "\(path): cannot create the TensorBoard event file: \(reason)"
    case .writeFailed(let path, let reason): return "\(path): writing TensorBoard events failed: \(reason)"
    case .closed(let path): return "\(path): the TensorBoard event file is already closed"
    case .corruptRecord(let path, let offset, let problem): return "\(path): record at byte \(offset): \(problem)"
    }
  }
}

/// Writes scalars to a TensorBoard event file (`events.out.tfevents.<unix seconds>.<hostname>`), so
/// `tensorboard --logdir DIRECTORY` plots them.
///
/// The file is a sequence of TFRecords, each one `Event` message (TensorBoard's `event.proto`,
/// encoded by the protoc-c code of `CTensorBoard`): first `file_version: "brain.Event:2"`, then one
/// event per `add` with a `Summary.Value{tag, simple_value}` per scalar. Records are buffered and
/// written out by `flush()`, which runs by itself once `flushEvery` events are pending or
/// `flushInterval` seconds have passed since the last flush (checked on each `add`), so a killed run
/// loses at most that much. Not thread-safe: use one writer from one thread.
public final class TensorBoardWriter {
  /// The event file being written.
  public let path: String
  /// Pending events that trigger a flush.
  public let flushEvery: Int
  /// Seconds after the last flush at which the next `add` flushes.
  public let flushInterval: Double

  private var descriptor: Int32
  private var buffer: [UInt8] = []
  private var pendingEvents = 0
  private var lastFlush: Double

  /// Creates `directory` (and `directory/runName` when given) and a new event file in it, and writes
  /// the `file_version` record to disk. With `runName` the scalars show in TensorBoard as that run
  /// of `--logdir directory`. When a file of that name exists (two writers started in the same
  /// second), `.1`, `.2`, ... is appended; an existing file is never overwritten.
  public init(directory: String, runName: String? = nil, flushEvery: Int = 20, flushInterval: Double = 5) throws {
    let folder = runName.map { URL(fileURLWithPath: directory).appendingPathComponent($0).path } ?? directory
    do {
      try FileManager.default.createDirectory(atPath: folder, withIntermediateDirectories: true)
    } catch {
      throw TensorBoardError.cannotCreateDirectory(path: folder, reason: Self.reason(error))
    }
    let now = Date().timeIntervalSince1970
    let base = URL(fileURLWithPath: folder).appendingPathComponent(
      "events.out.tfevents.\(Int(now)).\(ProcessInfo.processInfo.hostName)").path
    var candidate = base
    var attempt = 0
    var fd: Int32 = -1
    while true {
      fd = open(candidate, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0o644)
      if fd >= 0 { break }
      let code = errno
      guard code == EEXIST, attempt < 1000 else {
        throw TensorBoardError.cannotOpen(path: candidate, reason: String(cString: strerror(code)))
      }
      attempt += 1
      candidate = "\(base).\(attempt)"
    }
    self.path = candidate
    self.descriptor = fd
    self.flushEvery = max(1, flushEvery)
    self.flushInterval = flushInterval
    self.lastFlush = now
    let header = Self.encodeEvent(wallTime: now, step: 0) { event, body in
      "brain.Event:2".withCString { version in
        event.what_case = TENSORBOARD__EVENT__WHAT_FILE_VERSION
        event.file_version = UnsafeMutablePointer(mutating: version)
        return body(&event)
      }
    }
    appendRecord(header)
    do { try flush() } catch {
      closeDescriptor(fd)
      descriptor = -1
      throw error
    }
  }

  deinit { try? close() }

  /// Appends one event at `step` holding every scalar of `scalars` as a `simple_value` (a float32,
  /// as TensorBoard stores scalars), in tag order. `wallTime` is seconds since 1970, now by default.
  public func add(scalars: [String: Double], step: Int, wallTime: Double? = nil) throws {
    guard descriptor >= 0 else { throw TensorBoardError.closed(path: path) }
    let now = Date().timeIntervalSince1970
    let tags = scalars.keys.sorted()
    let record = Self.encodeEvent(wallTime: wallTime ?? now, step: Int64(step)) { event, body in
      let count = tags.count
      let values = UnsafeMutablePointer<Tensorboard__Summary__Value>.allocate(capacity: max(count, 1))
      let pointers = UnsafeMutablePointer<UnsafeMutablePointer<Tensorboard__Summary__Value>?>.allocate(capacity: max(count, 1))
      let cTags = tags.map { strdup($0) }
      defer {
        cTags.forEach { free($0) }
        values.deallocate()
        pointers.deallocate()
      }
      for (index, tag) in tags.enumerated() {
        tensorboard__summary__value__init(values + index)
        values[index].tag = cTags[index]
        values[index].value_case = TENSORBOARD__SUMMARY__VALUE__VALUE_SIMPLE_VALUE
        values[index].simple_value = Float(scalars[tag]!)
        pointers[index] = values + index
      }
      var summary = Tensorboard__Summary()
      tensorboard__summary__init(&summary)
      summary.n_value = count
      summary.value = pointers
      return withUnsafeMutablePointer(to: &summary) { summary in
        event.what_case = TENSORBOARD__EVENT__WHAT_SUMMARY
        event.summary = summary
        return body(&event)
      }
    }
    appendRecord(record)
    pendingEvents += 1
    if pendingEvents >= flushEvery || now - lastFlush >= flushInterval { try flush() }
  }

  /// Writes every buffered record to the file (the kernel's page cache; no fsync).
  public func flush() throws {
    guard descriptor >= 0 else { throw TensorBoardError.closed(path: path) }
    var written = 0
    while written < buffer.count {
      let result = buffer.withUnsafeBytes { write(descriptor, $0.baseAddress! + written, $0.count - written) }
      if result < 0 {
        if errno == EINTR { continue }
        let reason = String(cString: strerror(errno))
        buffer.removeFirst(written)
        throw TensorBoardError.writeFailed(path: path, reason: reason)
      }
      written += result
    }
    buffer.removeAll(keepingCapacity: true)
    pendingEvents = 0
    lastFlush = Date().timeIntervalSince1970
  }

  /// Flushes and closes the file; later calls do nothing, `add` and `flush` then throw.
  public func close() throws {
    guard descriptor >= 0 else { return }
    defer {
      closeDescriptor(descriptor)
      descriptor = -1
    }
    try flush()
  }

  /// TFRecord framing of `data`: length (UInt64, little endian), masked CRC-32C of those 8 bytes,
  /// the data, masked CRC-32C of the data (both UInt32, little endian).
  static func frame(_ data: [UInt8]) -> [UInt8] {
    var record: [UInt8] = []
    record.reserveCapacity(data.count + 16)
    let length = withUnsafeBytes(of: UInt64(data.count).littleEndian) { Array($0) }
    record += length
    withUnsafeBytes(of: CRC32C.masked(CRC32C.checksum(length)).littleEndian) { record += $0 }
    record += data
    withUnsafeBytes(of: CRC32C.masked(CRC32C.checksum(data)).littleEndian) { record += $0 }
    return record
  }

  private func appendRecord(_ data: [UInt8]) { buffer += Self.frame(data) }

  /// Packs an `Event` with `wallTime` and `step` after `fill` sets its payload; `fill` receives the
  /// event and a function that packs it, so the payload's C memory stays alive while it is packed.
  private static func encodeEvent(
    wallTime: Double, step: Int64,
    fill: (inout Tensorboard__Event, (UnsafeMutablePointer<Tensorboard__Event>) -> [UInt8]) -> [UInt8]
  ) -> [UInt8] {
    var event = Tensorboard__Event()
    tensorboard__event__init(&event)
    event.wall_time = wallTime
    event.step = step
    return fill(&event) { event in
      let size = tensorboard__event__get_packed_size(event)
      var bytes = [UInt8](repeating: 0, count: size)
      let packed = bytes.withUnsafeMutableBufferPointer { tensorboard__event__pack(event, $0.baseAddress!) }
      precondition(packed == size, "protobuf-c packed \(packed) bytes of an Event sized \(size)")
      return bytes
    }
  }

  private static func reason(_ error: Error) -> String {
    let underlying = (error as NSError).userInfo[NSUnderlyingErrorKey] as? NSError
    if let underlying, underlying.domain == NSPOSIXErrorDomain {
      return String(cString: strerror(Int32(underlying.code)))
    }
    return error.localizedDescription
  }
}

private func closeDescriptor(_ descriptor: Int32) { _ = close(descriptor) }

/// One event of a TensorBoard event file as `TensorBoardEventFile` reads it: the scalars of its
/// summary (simple values) in file order, or the file version of the first record.
public struct TensorBoardEvent: Equatable {
  public var wallTime: Double
  public var step: Int
  /// `file_version` ("brain.Event:2") when the event holds one.
  public var fileVersion: String?
  /// The summary's simple values as (tag, value), in the order they were written.
  public var scalars: [(tag: String, value: Float)]

  public static func == (a: TensorBoardEvent, b: TensorBoardEvent) -> Bool {
    a.wallTime == b.wallTime && a.step == b.step && a.fileVersion == b.fileVersion
      && a.scalars.map(\.tag) == b.scalars.map(\.tag) && a.scalars.map(\.value) == b.scalars.map(\.value)
  }
}

/// Reads TensorBoard event files back: TFRecord framing with both checksums verified, then each
/// record decoded as an `Event` by protobuf-c.
public enum TensorBoardEventFile {
  /// The payloads of the TFRecords in `bytes`; throws `corruptRecord` naming `path` and the
  /// record's byte offset for a truncated record or a checksum that does not match.
  public static func records(_ bytes: [UInt8], path: String = "<memory>") throws -> [[UInt8]] {
    var records: [[UInt8]] = []
    var offset = 0
    func uint32(_ at: Int) -> UInt32 { (0..<4).reduce(0) { $0 | UInt32(bytes[at + $1]) << (8 * $1) } }
    while offset < bytes.count {
      guard bytes.count - offset >= 12 else {
        throw TensorBoardError.corruptRecord(path: path, offset: offset, problem: "truncated header (\(bytes.count - offset) bytes)")
      }
      let lengthBytes = bytes[offset..<offset + 8]
      let length = (0..<8).reduce(UInt64(0)) { $0 | UInt64(lengthBytes[offset + $1]) << (8 * UInt64($1)) }
      guard uint32(offset + 8) == CRC32C.masked(CRC32C.checksum(lengthBytes)) else {
        throw TensorBoardError.corruptRecord(path: path, offset: offset, problem: "length checksum mismatch")
      }
      guard length <= UInt64(bytes.count - offset - 16) else {
        throw TensorBoardError.corruptRecord(path: path, offset: offset, problem: "truncated: \(length) data bytes announced")
      }
      let start = offset + 12
      let data = Array(bytes[start..<start + Int(length)])
      guard uint32(start + Int(length)) == CRC32C.masked(CRC32C.checksum(data)) else {
        throw TensorBoardError.corruptRecord(path: path, offset: offset, problem: "data checksum mismatch")
      }
      records.append(data)
      offset = start + Int(length) + 4
    }
    return records
  }

  /// Every event of the file at `path`, in order.
  public static func read(_ path: String) throws -> [TensorBoardEvent] {
    guard let data = FileManager.default.contents(atPath: path) else {
      throw TensorBoardError.cannotOpen(path: path, reason: "cannot read the file")
    }
    let bytes = [UInt8](data)
    var events: [TensorBoardEvent] = []
    var offset = 0
    for record in try records(bytes, path: path) {
      defer { offset += record.count + 16 }
      guard let event = record.withUnsafeBufferPointer({ tensorboard__event__unpack(nil, $0.count, $0.baseAddress) }) else {
        throw TensorBoardError.corruptRecord(path: path, offset: offset, problem: "not an Event message")
      }
      defer { tensorboard__event__free_unpacked(event, nil) }
      var decoded = TensorBoardEvent(wallTime: event.pointee.wall_time, step: Int(event.pointee.step), fileVersion: nil, scalars: [])
      switch event.pointee.what_case {
      case TENSORBOARD__EVENT__WHAT_FILE_VERSION:
        decoded.fileVersion = String(cString: event.pointee.file_version)
      case TENSORBOARD__EVENT__WHAT_SUMMARY:
        let summary = event.pointee.summary.pointee
        for index in 0..<summary.n_value {
          let value = summary.value[index]!.pointee
          if value.value_case == TENSORBOARD__SUMMARY__VALUE__VALUE_SIMPLE_VALUE {
            decoded.scalars.append((tag: String(cString: value.tag), value: value.simple_value))
          }
        }
      default:
        break
      }
      events.append(decoded)
    }
    return events
  }
}
