import DistillCore
import Foundation

/// Resolves and reads the external data of tensors (`data_location = EXTERNAL`). A location must
/// be a relative path that stays inside the model's directory, names a regular file (no symlink on
/// the way), and its offset and length must lie within that file and match the tensor's size.
struct ExternalDataReader {
  let file: String
  /// The model's directory; nil when the model did not come from a file.
  let directory: URL?
  let memoryBudget: Int64

  func load(_ tensor: inout TensorValue) throws {
    let name = tensor.name ?? "(unnamed)"
    func fail(_ problem: String) -> ONNXError { .externalData(file: file, tensor: name, problem: problem) }
    let entries = Dictionary(tensor.externalData.map { ($0.key, $0.value) }, uniquingKeysWith: { _, last in last })
    guard let location = entries["location"], !location.isEmpty else { throw fail("it has no 'location' entry") }
    guard let directory else {
      throw fail("the model was not read from a file, so location '\(location)' cannot be resolved")
    }
    if location.hasPrefix("/") || location.hasPrefix("\\") || location.dropFirst().hasPrefix(":") {
      throw fail("location '\(location)' is an absolute path; it must be relative to the model's directory")
    }
    let components = location.split(whereSeparator: { $0 == "/" || $0 == "\\" })
    if components.contains("..") {
      throw fail("location '\(location)' points outside the model's directory")
    }
    var path = directory
    for component in components where component != "." {
      path.appendPathComponent(String(component))
      var status = stat()
      if lstat(path.path, &status) != 0 {
        throw fail("file '\(location)' not found beside the model (looked for \(path.path))")
      }
      if (status.st_mode & S_IFMT) == S_IFLNK {
        throw fail(
          "location '\(location)' goes through the symlink '\(path.lastPathComponent)'; external data must be a regular file"
        )
      }
    }
    let resolved = path.resolvingSymlinksInPath().standardizedFileURL.path
    let root = directory.resolvingSymlinksInPath().standardizedFileURL.path
    guard resolved.hasPrefix(root.hasSuffix("/") ? root : root + "/") else {
      throw fail("location '\(location)' points outside the model's directory")
    }
    var status = stat()
    guard stat(resolved, &status) == 0, (status.st_mode & S_IFMT) == S_IFREG else {
      throw fail("location '\(location)' is not a regular file")
    }
    let fileSize = Int64(status.st_size)

    func integer(_ key: String) throws -> Int64? {
      guard let text = entries[key] else { return nil }
      guard let value = Int64(text) else { throw fail("\(key) '\(text)' is not an integer") }
      if value < 0 { throw fail("\(key) \(value) is negative") }
      return value
    }
    let offset = try integer("offset") ?? 0
    let declaredLength = try integer("length")
    guard tensor.dataType != .string, tensor.dataType.byteSize != nil,
      let size = TensorValue.checkedSize(dims: tensor.dims, dataType: tensor.dataType)
    else { throw fail("dtype \(tensor.dataType) cannot be stored as external data") }
    if let declaredLength, declaredLength != size.bytes {
      throw fail(
        "length \(declaredLength) does not match the \(size.bytes) bytes that dims \(tensor.shapeDescription) of \(tensor.dataType) need"
      )
    }
    if offset > fileSize {
      throw fail("offset \(offset) is beyond the end of '\(location)' (\(fileSize) bytes)")
    }
    if size.bytes > fileSize - offset {
      throw fail("offset \(offset) + \(size.bytes) bytes runs beyond the end of '\(location)' (\(fileSize) bytes)")
    }
    if size.bytes > memoryBudget {
      throw ONNXError.overBudget(file: file, what: "external tensor '\(name)'", bytes: size.bytes, limit: memoryBudget)
    }
    guard let handle = FileHandle(forReadingAtPath: resolved) else { throw fail("cannot open '\(location)'") }
    defer { try? handle.close() }
    do {
      try handle.seek(toOffset: UInt64(offset))
      let data = try handle.read(upToCount: Int(size.bytes)) ?? Data()
      guard data.count == Int(size.bytes) else { throw fail("'\(location)' ended early while reading") }
      tensor.bytes = [UInt8](data)
    } catch let error as ONNXError {
      throw error
    } catch {
      throw fail("cannot read '\(location)': \(error.localizedDescription)")
    }
  }
}
