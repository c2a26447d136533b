import DistillCore
import Foundation

/// The collective operations data-parallel training uses. Every process of the run makes the same
/// calls, with arrays of the same length, in the same order; each call returns when all have made it.
public protocol Communicator: Collective {
  /// This process's index, `0..<size`.
  var rank: Int { get }
  /// The number of processes.
  var size: Int { get }
  /// Replaces `values` with their element-wise sum over all processes.
  func sum(_ values: inout [Float]) throws
  /// Replaces `bytes` on every process with those of process `root` (whose count may differ).
  func broadcast(_ bytes: inout [UInt8], root: Int) throws
}

/// Why MPI could not be used.
public struct MPIError: Error, CustomStringConvertible {
  public let description: String
  public init(_ description: String) { self.description = description }
}

/// Open MPI (`libmpi.so.40`, Debian's `libopenmpi3`), loaded at run time so that the tool neither
/// links nor needs it unless `mpirun` started it. The only place that touches MPI's C interface.
///
/// Open MPI's handles are pointers to global objects (`MPI_COMM_WORLD` is `&ompi_mpi_comm_world`,
/// `MPI_FLOAT` is `&ompi_mpi_float`, `MPI_SUM` is `&ompi_mpi_op_sum`), found here with `dlsym`.
/// Errors stay MPI's default, fatal: a failed call (a peer that died) ends the job.
/// MPI is called from the thread that created the communicator only (`MPI_THREAD_FUNNELED`).
public final class MPICommunicator: Communicator {
  public let rank: Int
  public let size: Int

  private typealias Handle = UnsafeMutableRawPointer
  private typealias Allreduce = @convention(c) (UnsafeRawPointer?, UnsafeMutableRawPointer?, Int32, Handle, Handle, Handle) -> Int32
  private typealias Bcast = @convention(c) (UnsafeMutableRawPointer?, Int32, Handle, Int32, Handle) -> Int32
  private typealias Abort = @convention(c) (Handle, Int32) -> Int32
  private typealias Finalize = @convention(c) () -> Int32
  private let world: Handle, floatType: Handle, doubleType: Handle, byteType: Handle, sumOp: Handle
  private let allreduce: Allreduce
  private let bcast: Bcast
  private let abortCall: Abort
  private let finalizeCall: Finalize
  private var finalized = false

  /// Elements per MPI call (MPI counts are `int`).
  static let maximumCount = 1 << 28
  /// `MPI_IN_PLACE` in Open MPI's `mpi.h`.
  private static let inPlace = UnsafeRawPointer(bitPattern: 1)

  /// The launcher variables that mean `mpirun` (or a PMIx launcher such as Slurm's `srun --mpi=pmix`)
  /// started this process, and what they say.
  public static func launch(_ environment: [String: String] = ProcessInfo.processInfo.environment) -> (rank: String, size: String)? {
    if let size = environment["OMPI_COMM_WORLD_SIZE"] { return (environment["OMPI_COMM_WORLD_RANK"] ?? "?", size) }
    if let rank = environment["PMIX_RANK"] { return (rank, environment["PMIX_SIZE"] ?? "?") }
    if let rank = environment["PMI_RANK"] { return (rank, environment["PMI_SIZE"] ?? "?") }
    return nil
  }

  /// nil when no MPI launcher started this process; otherwise MPI initialized (`MPI_Init_thread`)
  /// with this process's rank and the job's size. Throws, saying what is missing, when a launcher
  /// started it but Open MPI cannot be loaded or initialized. `DISTILL_MPI_LIBRARY` names another
  /// library file to load.
  public static func fromEnvironment(_ environment: [String: String] = ProcessInfo.processInfo.environment) throws -> MPICommunicator? {
    guard let launch = launch(environment) else { return nil }
    let started = "started by an MPI launcher as rank \(launch.rank) of \(launch.size)"
    if environment["OMPI_COMM_WORLD_SIZE"] == nil, environment["PMIX_RANK"] == nil {
      throw MPIError("\(started) (PMI_RANK is set), but not by Open MPI's: distill runs data-parallel on Open MPI only (mpirun from openmpi-bin)")
    }
    let names = environment["DISTILL_MPI_LIBRARY"].map { [$0] } ?? ["libmpi.so.40", "libmpi.so"]
    var handle: UnsafeMutableRawPointer?
    var reasons: [String] = []
    for name in names {
      // RTLD_GLOBAL: Open MPI's plugins (mca_*.so) resolve their symbols against libmpi's.
      handle = dlopen(name, RTLD_NOW | RTLD_GLOBAL)
      if handle != nil { break }
      reasons.append(dlerror().map { String(cString: $0) } ?? name)
    }
    guard let handle else {
      throw MPIError(
        "\(started), but Open MPI cannot be loaded (\(reasons.joined(separator: "; "))); install it (apt-get install openmpi-bin libopenmpi3) "
          + "on every host, or run without mpirun for a single process")
    }
    return try MPICommunicator(library: handle, started: started)
  }

  private init(library: UnsafeMutableRawPointer, started: String) throws {
    func symbol(_ name: String) throws -> UnsafeMutableRawPointer {
      guard let address = dlsym(library, name) else {
        throw MPIError("\(started), but the loaded MPI library has no symbol \(name): is it Open MPI 4 (libmpi.so.40)?")
      }
      return address
    }
    func function<F>(_ name: String, as type: F.Type) throws -> F { unsafeBitCast(try symbol(name), to: type) }
    typealias InitThread = @convention(c) (UnsafeMutablePointer<Int32>?, UnsafeMutablePointer<UnsafeMutablePointer<UnsafeMutablePointer<CChar>?>?>?, Int32, UnsafeMutablePointer<Int32>) -> Int32
    typealias CommQuery = @convention(c) (Handle, UnsafeMutablePointer<Int32>) -> Int32
    let initThread = try function("MPI_Init_thread", as: InitThread.self)
    let commRank = try function("MPI_Comm_rank", as: CommQuery.self)
    let commSize = try function("MPI_Comm_size", as: CommQuery.self)
    allreduce = try function("MPI_Allreduce", as: Allreduce.self)
    bcast = try function("MPI_Bcast", as: Bcast.self)
    abortCall = try function("MPI_Abort", as: Abort.self)
    finalizeCall = try function("MPI_Finalize", as: Finalize.self)
    world = try symbol("ompi_mpi_comm_world")
    floatType = try symbol("ompi_mpi_float")
    doubleType = try symbol("ompi_mpi_double")
    byteType = try symbol("ompi_mpi_byte")
    sumOp = try symbol("ompi_mpi_op_sum")
    let funneled: Int32 = 1  // MPI_THREAD_FUNNELED
    var provided: Int32 = 0
    guard initThread(nil, nil, funneled, &provided) == 0 else { throw MPIError("\(started), but MPI_Init_thread failed") }
    var value: Int32 = 0
    _ = commRank(world, &value)
    rank = Int(value)
    _ = commSize(world, &value)
    size = Int(value)
  }

  public func sum(_ values: inout [Float]) throws { try reduce(&values, type: floatType) }
  public func sum(_ values: inout [Double]) throws { try reduce(&values, type: doubleType) }

  private func reduce<T>(_ values: inout [T], type: Handle) throws {
    let total = values.count
    try values.withUnsafeMutableBufferPointer { buffer in
      var start = 0
      repeat {
        let count = min(Self.maximumCount, total - start)
        let code = allreduce(Self.inPlace, buffer.baseAddress.map { UnsafeMutableRawPointer($0 + start) }, Int32(count), type, sumOp, world)
        guard code == 0 else { throw MPIError("MPI_Allreduce of \(count) values failed (code \(code))") }
        start += count
      } while start < total
    }
  }

  public func broadcast(_ bytes: inout [UInt8], root: Int) throws {
    var count = [Double(bytes.count)]
    let code = bcast(&count, 1, doubleType, Int32(root), world)
    guard code == 0 else { throw MPIError("MPI_Bcast failed (code \(code))") }
    if rank != root { bytes = [UInt8](repeating: 0, count: Int(count[0])) }
    let total = bytes.count
    try bytes.withUnsafeMutableBufferPointer { buffer in
      var start = 0
      while start < total {
        let chunk = min(Self.maximumCount, total - start)
        let code = bcast(buffer.baseAddress! + start, Int32(chunk), byteType, Int32(root), world)
        guard code == 0 else { throw MPIError("MPI_Bcast of \(chunk) bytes failed (code \(code))") }
        start += chunk
      }
    }
  }

  /// Ends every process of the job (`MPI_Abort`) with `code`; for a process that cannot go on.
  public func abort(_ code: Int32) -> Never {
    _ = abortCall(world, code)
    exit(code)
  }

  /// `MPI_Finalize`, once; after it no other call may be made.
  public func finalize() {
    guard !finalized else { return }
    finalized = true
    _ = finalizeCall()
  }
}
