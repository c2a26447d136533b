import ArgumentParser
import DistillCore
import DistillONNX
import DistillTrain
import Foundation

struct Train: ParsableCommand {
  static let configuration = CommandConfiguration(
    abstract: "Distill a teacher detector into a student, both ONNX, as a YAML config says; write the trained student as ONNX.",
    discussion: """
      The config names the teacher and student models, the data, the losses between teacher and student \
      taps (node outputs; `distill inspect` lists likely ones), and the schedule. It is checked whole \
      before any data is read, and every problem is reported at once.

      OUTPUT (the config's `output`) receives metrics.jsonl (one line per step, the first before any \
      update), TensorBoard event files, `checkpoint` (every train.checkpoint_every steps and at the end) \
      and, at the end, student.onnx. An existing OUTPUT is never overwritten without --resume or \
      --overwrite. Ctrl-C (SIGINT) or SIGTERM writes a checkpoint and stops; --resume continues from it, \
      with the same metrics as a run that was never stopped.

      Under Open MPI (`mpirun -np N distill train CONFIG`) N processes train data-parallel: train.batch \
      stays the global batch, each process takes its slice of every batch, gradients are summed across \
      processes, and process 0 alone writes OUTPUT; `sync_bn: true` takes BatchNormalization's batch \
      statistics over the global batch. A process that fails ends the whole job (MPI_Abort). Open MPI \
      is loaded only then: a single process needs no MPI.
      """)

  @Argument(help: "The distillation config (YAML or JSON).") var config: String
  @Flag(name: .long, help: "Continue from OUTPUT/checkpoint.") var resume = false
  @Flag(name: .long, help: "Replace the results of an earlier run in OUTPUT.") var overwrite = false
  @Option(name: .customLong("dump-loss-graph"), help: "Write the loss graph (adapters and every loss, as ONNX) to this file and stop.")
  var dumpLossGraph: String?

  func validate() throws {
    if resume && overwrite { throw ValidationError("--resume continues a run and --overwrite replaces it: give one") }
  }

  func run() throws {
    let communicator: MPICommunicator?
    do { communicator = try MPICommunicator.fromEnvironment() } catch { throw RuntimeError("\(error)") }
    guard let communicator else { return try train(communicator: nil) }
    do {
      try train(communicator: communicator)
    } catch let stop as ExitCode {
      communicator.finalize()
      throw stop
    } catch {
      let place = "process \(communicator.rank) of \(communicator.size) (host \(ProcessInfo.processInfo.hostName), pid \(getpid()))"
      FileHandle.standardError.write(Data("distill train: error on \(place): \(error)\nending the job\n".utf8))
      communicator.abort(1)
    }
    communicator.finalize()
  }

  /// The run; data-parallel with `communicator`, where process 0 alone reads and writes OUTPUT.
  private func train(communicator: MPICommunicator?) throws {
    let settings = try DistillConfig.load(config)
    let parallel = try communicator.map { try DataParallel(communicator: $0, batch: settings.batch, syncBatchNormalization: settings.syncBatchNormalization) }
    let writes = (parallel?.rank ?? 0) == 0
    let progressLine: (String) -> Void = writes ? progressLine : { _ in }
    let output = settings.output
    let files = (metrics: output + "/metrics.jsonl", checkpoint: output + "/checkpoint", student: output + "/student.onnx")
    let existing = (try? FileManager.default.contentsOfDirectory(atPath: output)) ?? []
    if dumpLossGraph == nil, writes {
      if resume {
        guard FileManager.default.fileExists(atPath: files.checkpoint) || FileManager.default.fileExists(atPath: files.checkpoint + ".prev") else {
          throw RuntimeError("--resume: \(files.checkpoint) does not exist; start without --resume")
        }
      } else if !existing.isEmpty {
        guard overwrite else {
          throw RuntimeError("\(output) already holds a run (\(existing.sorted().prefix(4).joined(separator: ", "))); continue it with --resume or replace it with --overwrite")
        }
      }
    }
    var options = RunOptions(checkpointPath: writes ? files.checkpoint : nil, checkpointEvery: settings.checkpointEvery, logPath: writes ? files.metrics : nil)
    options.keepPreviousCheckpoint = true
    if let parallel {
      let rank = parallel.rank
      options.warn = { FileHandle.standardError.write(Data("warning: process \(rank): \($0)\n".utf8)) }
      let slices = (0..<parallel.size).map { DataParallel.slice(rank: $0, of: parallel.size, batch: settings.batch).count }
      progressLine(
        "data-parallel: \(parallel.size) processes, global batch \(settings.batch) in slices of \(Set(slices).sorted().map(String.init).joined(separator: " and ")), "
          + "BatchNormalization \(settings.batchNormalization == .frozen ? "frozen" : settings.syncBatchNormalization ? "synchronized" : "per process")")
    }
    progressLine("preparing: reading the models, checking taps, measuring tap shapes")
    let distiller = try Distiller(config: settings, options: options, parallel: parallel)
    let trainer = distiller.trainer
    if let dumpLossGraph {
      guard writes else { return }
      try ModelFile.write(distiller.loss.graph.model, to: dumpLossGraph, protecting: [settings.teacher, settings.student])
      print("wrote the loss graph to \(dumpLossGraph) (\(distiller.loss.graph.model.graph!.nodes.count) nodes, "
        + "\(distiller.loss.adapterNames.count) adapter tensors); not training")
      return
    }
    if overwrite, writes {
      for name in existing where name == "metrics.jsonl" || name.hasPrefix("checkpoint") || name == "student.onnx" || name.hasPrefix("events.out.tfevents") {
        try FileManager.default.removeItem(atPath: output + "/" + name)
      }
    }
    if writes { try FileManager.default.createDirectory(atPath: output, withIntermediateDirectories: true) }
    if !trainer.untiedParameters.isEmpty {
      progressLine("note: the student's exporter merged \(trainer.untiedParameters.count) equal-valued parameters; each layer trains its own copy")
    }
    let board = writes ? try TensorBoardWriter(directory: output) : nil
    func record(_ report: StepReport) throws {
      guard let board else { return }
      var scalars: [String: Double] = ["loss": Double(report.loss), "lr": Double(report.learningRate)]
      for (name, value) in report.terms { scalars["loss/" + name] = Double(value) }
      if let norm = report.gradientNorm { scalars["grad_norm"] = norm }
      try board.add(scalars: scalars, step: report.step)
    }
    if resume {
      try trainer.resume(from: files.checkpoint)
      progressLine("resumed at step \(trainer.step) from \(trainer.lastCheckpoint ?? files.checkpoint)")
    } else {
      let initial = try trainer.initialReport()
      try trainer.log(initial)
      try record(initial)
    }
    progressLine(
      "training: \(distiller.samples) samples at \(distiller.inputSize.height)x\(distiller.inputSize.width), batch \(settings.batch), "
        + "\(settings.steps) steps, \(trainer.trainable.count) student tensors and \(distiller.loss.adapterNames.count) adapter tensors")
    let stop = StopRequest()
    let start = ContinuousClock.now, firstStep = trainer.step
    while trainer.step < settings.steps {
      // Data-parallel, the processes stop together, after the same step.
      if try parallel?.any(stop.signal != nil) ?? (stop.signal != nil) {
        let signal = stop.signal ?? SIGTERM
        if writes { try trainer.saveCheckpoint() }
        try board?.close()
        progressLine("\nstopped by \(signal == SIGINT ? "SIGINT" : "SIGTERM") after step \(trainer.step); checkpoint written to \(files.checkpoint); continue with --resume")
        throw ExitCode(128 + signal)
      }
      let report = try trainer.trainStep()
      try record(report)
      let periodic = settings.checkpointEvery > 0 && trainer.step % settings.checkpointEvery == 0
      if writes, periodic || trainer.step == settings.steps, trainer.consecutiveNonFinite == 0 { try trainer.saveCheckpoint() }
      let seconds = (ContinuousClock.now - start) / .seconds(1)
      let rate = Double(trainer.step - firstStep) / max(seconds, 1e-9)
      let terms = report.terms.sorted { $0.key < $1.key }.map { String(format: "%@ %.4g", $0.key, $0.value) }.joined(separator: "  ")
      guard writes else { continue }
      progress(
        String(
          format: "step %d/%d  loss %.4g  %@  lr %.3g  %.2f it/s  ETA %@", report.step, settings.steps, report.loss, terms, report.learningRate,
          rate, duration(Double(settings.steps - trainer.step) / max(rate, 1e-9))), final: trainer.step == settings.steps)
    }
    try board?.close()
    guard writes else { return }
    try distiller.exportStudent(to: files.student)
    print("wrote \(files.student) (step \(trainer.step)); metrics in \(files.metrics), checkpoint in \(files.checkpoint)")
  }
}

/// Set by SIGINT or SIGTERM; the training loop checks it between steps.
final class StopRequest: @unchecked Sendable {
  private let lock = NSLock()
  private var received: Int32?
  private var sources: [DispatchSourceSignal] = []

  init() {
    for number in [SIGINT, SIGTERM] {
      Glibc.signal(number, SIG_IGN)
      let source = DispatchSource.makeSignalSource(signal: number, queue: .global())
      source.setEventHandler { [weak self] in
        guard let self else { return }
        self.lock.lock()
        if self.received == nil { self.received = number }
        self.lock.unlock()
      }
      source.resume()
      sources.append(source)
    }
  }

  var signal: Int32? {
    lock.lock()
    defer { lock.unlock() }
    return received
  }
}

private let standardErrorIsTerminal = isatty(2) != 0

/// A status line on standard error: rewritten in place on a terminal, printed every few seconds otherwise.
private nonisolated(unsafe) var lastPlainProgress = ContinuousClock.now - .seconds(60)
func progress(_ line: String, final: Bool) {
  if standardErrorIsTerminal {
    FileHandle.standardError.write(Data(("\r\u{1B}[2K" + line + (final ? "\n" : "")).utf8))
  } else if final || ContinuousClock.now - lastPlainProgress >= .seconds(5) {
    lastPlainProgress = .now
    FileHandle.standardError.write(Data((line + "\n").utf8))
  }
}

private func progressLine(_ line: String) { FileHandle.standardError.write(Data((line + "\n").utf8)) }

private func duration(_ seconds: Double) -> String {
  guard seconds.isFinite else { return "?" }
  let total = Int(seconds.rounded())
  return total >= 3600 ? "\(total / 3600)h\(String(format: "%02d", total % 3600 / 60))m" : total >= 60 ? "\(total / 60)m\(String(format: "%02d", total % 60))s" : "\(total)s"
}
