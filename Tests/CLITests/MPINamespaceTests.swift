import Foundation
import XCTest

/// Two network namespaces of this machine joined by a veth pair, standing in for two hosts: each has
/// its own loopback and one end of the pair (10.77.0.1/24 and 10.77.0.2/24), so traffic between them
/// crosses two network stacks and the veth link. Names carry the test's pid; `remove` (idempotent)
/// ends every process left in them and deletes them, which deletes the veth pair too.
struct NetworkNamespaces {
  let ip: String
  let names: [String]
  let interfaces: [String]
  let addresses = ["10.77.0.1", "10.77.0.2"]
  static let subnet = "10.77.0.0/24"
  static let prefix = "distill-mpi-"

  /// Runs `ip ARGUMENTS` (10 s at most); throws its error output on failure.
  @discardableResult
  static func ip(_ ip: String, _ arguments: [String], in test: MPITrainTests) throws -> String {
    let result = try test.run(ip, arguments, timeout: 10)
    guard result.status == 0, !result.timedOut else {
      let cause = result.timedOut ? "timed out" : "exit \(result.status), \(result.stderr.trimmingCharacters(in: .whitespacesAndNewlines))"
      throw NamespaceError("ip \(arguments.joined(separator: " ")): \(cause)")
    }
    return result.stdout
  }

  /// The pair, or a skip saying why it cannot be made here (no `ip`, no CAP_SYS_ADMIN or
  /// CAP_NET_ADMIN, no veth driver).
  static func make(for test: MPITrainTests) throws -> NetworkNamespaces {
    let directories = (ProcessInfo.processInfo.environment["PATH"] ?? "").split(separator: ":").map(String.init) + ["/usr/sbin", "/sbin"]
    guard let ip = directories.map({ $0 + "/ip" }).first(where: FileManager.default.isExecutableFile(atPath:)) else {
      throw XCTSkip("ip is not installed (apt-get install iproute2; make test installs it): no network namespaces")
    }
    removeStale(ip, test)
    let pid = getpid()
    let pair = NetworkNamespaces(ip: ip, names: ["\(prefix)\(pid)-a", "\(prefix)\(pid)-b"], interfaces: ["dmpi\(pid)a", "dmpi\(pid)b"])
    do {
      for name in pair.names { try Self.ip(ip, ["netns", "add", name], in: test) }
    } catch {
      pair.remove(test)
      throw XCTSkip("cannot create network namespaces here (needs CAP_SYS_ADMIN and CAP_NET_ADMIN, as root outside a restricted container has): \(error)")
    }
    do {
      try Self.ip(ip, ["link", "add", pair.interfaces[0], "type", "veth", "peer", "name", pair.interfaces[1]], in: test)
      for side in 0..<2 {
        let (name, interface) = (pair.names[side], pair.interfaces[side])
        try Self.ip(ip, ["link", "set", interface, "netns", name], in: test)
        try Self.ip(ip, ["-n", name, "address", "add", pair.addresses[side] + "/24", "dev", interface], in: test)
        try Self.ip(ip, ["-n", name, "link", "set", "lo", "up"], in: test)
        try Self.ip(ip, ["-n", name, "link", "set", interface, "up"], in: test)
      }
    } catch {
      pair.remove(test)
      throw XCTSkip("network namespaces work here but a veth pair between them cannot be set up: \(error)")
    }
    return pair
  }

  /// Namespaces left by a test process that no longer runs (killed before it could clean up).
  static func removeStale(_ ip: String, _ test: MPITrainTests) {
    guard let names = try? FileManager.default.contentsOfDirectory(atPath: "/run/netns") else { return }
    for name in names where name.hasPrefix(prefix) {
      guard let pid = Int32(name.dropFirst(prefix.count).prefix { $0.isNumber }), pid != getpid(), kill(pid, 0) != 0, errno == ESRCH
      else { continue }
      NetworkNamespaces(ip: ip, names: [name], interfaces: []).remove(test)
    }
  }

  /// The namespace's inode, as `/proc/PID/ns/net` names it (`net:[INODE]`).
  func inode(_ name: String) -> String? {
    var status = stat()
    guard stat("/run/netns/\(name)", &status) == 0 else { return nil }
    return "net:[\(status.st_ino)]"
  }

  /// The processes in each namespace (by index of `names`): pid and, for an MPI process, its rank.
  func processes() -> [Int: [(pid: Int32, rank: Int?)]] {
    var inodes: [String: Int] = [:]
    for (index, name) in names.enumerated() { if let inode = inode(name) { inodes[inode] = index } }
    var found: [Int: [(pid: Int32, rank: Int?)]] = [:]
    guard !inodes.isEmpty, let entries = try? FileManager.default.contentsOfDirectory(atPath: "/proc") else { return found }
    for entry in entries {
      guard let pid = Int32(entry), let link = try? FileManager.default.destinationOfSymbolicLink(atPath: "/proc/\(pid)/ns/net"),
        let index = inodes[link]
      else { continue }
      let environment = FileManager.default.contents(atPath: "/proc/\(pid)/environ") ?? Data()
      let rank = environment.split(separator: 0).lazy.map { String(decoding: $0, as: UTF8.self) }
        .first { $0.hasPrefix("OMPI_COMM_WORLD_RANK=") }.flatMap { Int($0.dropFirst("OMPI_COMM_WORLD_RANK=".count)) }
      found[index, default: []].append((pid, rank))
    }
    return found
  }

  /// Bytes sent and received by each end of the veth pair (its `/sys/class/net/*/statistics`, read
  /// inside its namespace).
  func counters(_ test: MPITrainTests) throws -> [(sent: Int, received: Int)] {
    try zip(names, interfaces).map { name, interface in
      let statistics = "/sys/class/net/\(interface)/statistics/"
      let text = try Self.ip(ip, ["netns", "exec", name, "cat", statistics + "tx_bytes", statistics + "rx_bytes"], in: test)
      let values = text.split(separator: "\n").compactMap { Int($0.trimmingCharacters(in: .whitespaces)) }
      guard values.count == 2 else { throw NamespaceError("unreadable counters of \(interface): \(text)") }
      return (values[0], values[1])
    }
  }

  /// Kills what still runs in the namespaces (by pid: only processes this test started get there)
  /// and deletes them; the veth ends inside go with them. Whatever already went is skipped.
  func remove(_ test: MPITrainTests) {
    for (_, list) in processes() { for process in list { kill(process.pid, SIGKILL) } }
    for name in names where FileManager.default.fileExists(atPath: "/run/netns/\(name)") {
      for interface in interfaces { _ = try? test.run(ip, ["-n", name, "link", "delete", interface], timeout: 10) }
      _ = try? test.run(ip, ["netns", "delete", name], timeout: 10)
    }
  }
}

struct NamespaceError: Error, CustomStringConvertible {
  let description: String
  init(_ description: String) { self.description = description }
}

extension MPITrainTests {
  /// The loopback equality (2 processes == 1, `bn: frozen`, SGD, the tiny FCOS teaching the tiny
  /// RetinaNet) with the two processes on two "hosts": network namespaces joined by a veth pair.
  /// `mpirun` runs in the first; Open MPI's rsh launcher starts a daemon in each through
  /// tools/netns-rsh (the agent in place of ssh), and both the daemons' control traffic and the
  /// processes' reductions (`btl self,tcp`) are held to the veth subnet. The veth's byte counters
  /// show the gradients crossed it.
  func testTwoProcessesInTwoNetworkNamespacesEqualOne() throws {
    let mpirun = try mpirun()
    let agent = fixtures.deletingLastPathComponent().deletingLastPathComponent().appendingPathComponent("tools/netns-rsh").path
    let hosts = try NetworkNamespaces.make(for: self)
    defer { hosts.remove(self) }
    let before = try hosts.counters(self)
    var ranks: [Int: Int] = [:]  // rank: namespace index
    let steps = 6
    let result = try compareWithOneProcess("netns", batch: 4, steps: steps) { config in
      let options = [
        "--allow-run-as-root", "--host", hosts.names.joined(separator: ","), "-np", "2", "--map-by", "node", "--bind-to", "none",
        "--mca", "plm_rsh_agent", agent, "--mca", "btl", "self,tcp",
        "--mca", "btl_tcp_if_include", NetworkNamespaces.subnet, "--mca", "oob_tcp_if_include", NetworkNamespaces.subnet,
      ]
      return try self.run(hosts.ip, ["netns", "exec", hosts.names[0], mpirun] + options + [try self.distillBinary(), "train", config], timeout: 240) { _ in
        for (index, list) in hosts.processes() { for process in list { if let rank = process.rank { ranks[rank] = index } } }
        return ranks.count == 2
      }
    }
    let after = try hosts.counters(self)
    XCTAssertLessThanOrEqual(result.weights.value, tolerance, "worst in \(result.weights.tensor)")
    assertTracesAgree(result.one, result.many)
    XCTAssertEqual(result.many.count, steps + 1)
    XCTAssertEqual(ranks, [0: 0, 1: 1], "one process in each namespace")
    print("2 processes in 2 namespaces vs 1: weights within \(result.weights.value) (worst in \(result.weights.tensor))")
    // Process 0 named its event file after its host, the first namespace (tools/netns-rsh sets it).
    let output = FileManager.default.temporaryDirectory.appendingPathComponent("mpi-train-\(getpid())-netns-2/run").path
    let events = try FileManager.default.contentsOfDirectory(atPath: output).filter { $0.hasPrefix("events.out.tfevents.") }
    XCTAssertEqual(events.map { $0.hasSuffix("." + hosts.names[0]) }, [true], "\(events)")

    // Every step sums the student's gradients (float32) over the two processes: whatever the
    // algorithm, each must receive all of the other's values (or their sums), so at least 4 bytes a
    // parameter a step cross the veth in each direction (plus headers, adapters and control).
    let parameters = try weights(fixtures.appendingPathComponent("heads/retinanet/model.onnx").path).values.reduce(0) { $0 + $1.count }
    let minimum = steps * parameters * 4
    for side in 0..<2 {
      let sent = after[side].sent - before[side].sent, received = after[side].received - before[side].received
      print("veth \(hosts.interfaces[side]) in \(hosts.names[side]): sent \(sent) bytes, received \(received) (gradients: \(minimum))")
      XCTAssertGreaterThanOrEqual(sent, minimum, "\(hosts.interfaces[side]) sent the gradients")
      XCTAssertGreaterThanOrEqual(received, minimum, "\(hosts.interfaces[side]) received the gradients")
    }

    hosts.remove(self)
    for name in hosts.names { XCTAssertFalse(FileManager.default.fileExists(atPath: "/run/netns/\(name)"), "\(name) removed") }
  }
}
