import CDNNL
import Foundation

/// 2-D convolutions through oneDNN (the only file that calls it): forward with the fused bias,
/// residual and activation, and backward to the data and the weights, on NCHW float tensors.
///
/// oneDNN picks its kernels for this CPU when a convolution is first planned (AVX2, AVX-512...)
/// and runs them on its OpenMP threads, `Parallel.threads` of them (they spin a little after each
/// call; OMP_WAIT_POLICY=passive measured slower here). Its fast kernels want blocked
/// layouts (channels in blocks of 8 or 16): operands are reordered into them and results back
/// around each call. Plans are kept per shape, built on first use.
public enum DNNL {
  /// Whether `Conv` runs on oneDNN; `DISTILL_DNNL=0` selects the im2col + OpenBLAS path instead.
  nonisolated(unsafe) public static var enabled = getenv("DISTILL_DNNL").map { String(cString: $0) != "0" } ?? true

  /// One convolution's geometry (group 1, two spatial axes).
  struct Shape: Hashable {
    var batch, channels, filters: Int
    var input, output, kernel, strides, dilations, pads: [Int]

    init(batch: Int, channels: Int, filters: Int, _ g: ConvGeometry) {
      (self.batch, self.channels, self.filters) = (batch, channels, filters)
      (input, output, kernel, strides, dilations, pads) = (g.input, g.output, g.kernel, g.strides, g.dilations, g.pads)
    }
  }

  /// A forward convolution's plan: its geometry and what it fuses.
  private struct PlanKey: Hashable {
    var shape: Shape
    var bias, accumulate: Bool
    var activation: FusedActivation
  }

  /// A tensor as callers hold it, plain (NCHW / OIHW / X) or, for activations, channels last
  /// (NHWC), and the layout a primitive chose for it, with the reorders between a caller's layout
  /// and the chosen one (made on first use, none where they are the same).
  private final class Operand {
    let plain: dnnl_memory_desc_t
    let channelsLast: dnnl_memory_desc_t?
    var chosen: dnnl_memory_desc_t
    /// By caller layout (channels last or not): to the chosen layout and back; nil: no reorder.
    private var reorders: [Bool: (there: dnnl_primitive_t, back: dnnl_primitive_t)?] = [:]

    /// nil when oneDNN cannot reorder between the plain and the chosen layout.
    init?(_ plain: dnnl_memory_desc_t, _ chosen: dnnl_memory_desc_t, activation dims: [Int]? = nil) {
      (self.plain, self.chosen) = (plain, chosen)
      channelsLast = dims.flatMap { DNNL.descriptor($0, dnnl_nhwc) }
      guard reorders(channelsLast: false) != nil || isChosen(channelsLast: false) else { return nil }
    }

    func user(channelsLast: Bool) -> dnnl_memory_desc_t { channelsLast ? self.channelsLast! : plain }

    func isChosen(channelsLast: Bool) -> Bool {
      var (user, chosen) = (user(channelsLast: channelsLast), self.chosen)
      return dnnl_memory_desc_equal(&user, &chosen) != 0
    }

    /// The reorders between the caller's layout and the chosen one; nil when they are the same
    /// (or oneDNN has none, which planning rules out for the plain layout).
    func reorders(channelsLast: Bool) -> (there: dnnl_primitive_t, back: dnnl_primitive_t)? {
      if let known = reorders[channelsLast] { return known }
      var (user, chosen) = (user(channelsLast: channelsLast), self.chosen)
      var made: (there: dnnl_primitive_t, back: dnnl_primitive_t)?
      if dnnl_memory_desc_equal(&user, &chosen) == 0, let there = DNNL.reorder(&user, &chosen), let back = DNNL.reorder(&chosen, &user) {
        made = (there, back)
      }
      reorders[channelsLast] = made
      return made
    }

    var bytes: Int { withUnsafePointer(to: chosen) { dnnl_memory_desc_get_size($0) } }
  }

  private final class ForwardPlan {
    let primitive: dnnl_primitive_t
    let source, weights, destination: Operand
    let bias: dnnl_memory_desc_t?
    var scratchpad: dnnl_memory_desc_t

    init(
      primitive: dnnl_primitive_t, source: Operand, weights: Operand, destination: Operand, bias: dnnl_memory_desc_t?,
      scratchpad: dnnl_memory_desc_t
    ) {
      (self.primitive, self.source, self.weights, self.destination, self.bias) = (primitive, source, weights, destination, bias)
      self.scratchpad = scratchpad
    }
  }

  private final class BackwardPlan {
    let data: dnnl_primitive_t
    let dataGradient, dataWeights, dataOutputGradient: Operand
    let weights: dnnl_primitive_t
    let weightsGradient, weightsSource, weightsOutputGradient: Operand
    var dataScratchpad = dnnl_memory_desc_t(), weightsScratchpad = dnnl_memory_desc_t()
    var sameOutputGradientLayout: Bool {
      var (a, b) = (dataOutputGradient.chosen, weightsOutputGradient.chosen)
      return dnnl_memory_desc_equal(&a, &b) != 0
    }

    init(
      data: dnnl_primitive_t, dataGradient: Operand, dataWeights: Operand, dataOutputGradient: Operand, weights: dnnl_primitive_t,
      weightsGradient: Operand, weightsSource: Operand, weightsOutputGradient: Operand
    ) {
      (self.data, self.dataGradient, self.dataWeights, self.dataOutputGradient) = (data, dataGradient, dataWeights, dataOutputGradient)
      (self.weights, self.weightsGradient, self.weightsSource, self.weightsOutputGradient) = (
        weights, weightsGradient, weightsSource, weightsOutputGradient
      )
    }
  }

  private struct Runtime {
    let engine: dnnl_engine_t
    let stream: dnnl_stream_t
  }

  nonisolated(unsafe) private static let runtime: Runtime? = {
    var engine: dnnl_engine_t?, stream: dnnl_stream_t?
    guard dnnl_engine_create(&engine, dnnl_cpu, 0) == dnnl_success, let engine,
      dnnl_stream_create(&stream, engine, UInt32(dnnl_stream_default_flags.rawValue)) == dnnl_success, let stream
    else { return nil }
    return Runtime(engine: engine, stream: stream)
  }()

  /// Weights already in a forward plan's layout, by plan and by address of the plain weights,
  /// which each entry keeps alive: while it does, no other array can take that address, and the
  /// contents cannot change (a write to a shared array copies it first).
  private struct PackedKey: Hashable {
    let plan: ObjectIdentifier
    let address: UnsafeRawPointer
  }

  private final class Packed {
    let source: [Float]
    let data: UnsafeMutableRawPointer
    let bytes: Int

    init(source: [Float], bytes: Int) {
      (self.source, self.bytes) = (source, bytes)
      data = UnsafeMutableRawPointer.allocate(byteCount: max(bytes, 64), alignment: 64)
    }

    deinit { data.deallocate() }
  }

  nonisolated(unsafe) private static var packed: [PackedKey: Packed] = [:]
  nonisolated(unsafe) private static var packedBytes = 0
  /// Bound on the packed weights kept; the cache starts over beyond it.
  private static let packedBudget = 512 << 20

  private static let lock = NSLock()
  /// nil records a shape oneDNN has no kernel for.
  nonisolated(unsafe) private static var forwardPlans: [PlanKey: ForwardPlan?] = [:]
  nonisolated(unsafe) private static var backwardPlans: [Shape: BackwardPlan?] = [:]

  // MARK: Running

  /// Whether oneDNN runs this forward convolution (it is on and has a kernel for the shape).
  static func canConvolve(_ shape: Shape, bias: Bool, accumulate: Bool, activation: FusedActivation) -> Bool {
    guard enabled, let runtime else { return false }
    lock.lock()
    defer { lock.unlock() }
    return forwardPlan(shape, bias: bias, accumulate: accumulate, activation, runtime) != nil
  }

  /// `y = activation(conv(x, w) + bias [+ y's contents when accumulate])`; false (nothing written)
  /// when oneDNN is off or has no kernel for this shape. With `constantWeights` (`w` is their
  /// storage), the weights are reordered once and kept for later calls with the same array.
  /// `sourceChannelsLast`/`destinationChannelsLast`: `x`/`y` are in N, H, W, C order, else N, C, H, W.
  static func convolution(
    _ shape: Shape, _ x: UnsafePointer<Float>, _ w: UnsafePointer<Float>, bias: UnsafePointer<Float>?, _ y: UnsafeMutablePointer<Float>,
    accumulate: Bool, activation: FusedActivation, constantWeights: [Float]? = nil, sourceChannelsLast: Bool = false,
    destinationChannelsLast: Bool = false
  ) -> Bool {
    guard enabled, let runtime else { return false }
    lock.lock()
    defer { lock.unlock() }
    guard let plan = forwardPlan(shape, bias: bias != nil, accumulate: accumulate, activation, runtime) else { return false }
    omp_set_num_threads(Int32(Parallel.threads))
    var arguments: [(Int32, dnnl_memory_t)] = []
    var scratch: [() -> Void] = []
    defer { for release in scratch { release() } }
    let source = input(plan.source, UnsafeMutableRawPointer(mutating: x), channelsLast: sourceChannelsLast, runtime, &scratch)
    var weights: dnnl_memory_t
    if let constantWeights, let reorders = plan.weights.reorders(channelsLast: false) {
      let key = PackedKey(plan: ObjectIdentifier(plan), address: UnsafeRawPointer(w))
      if packed[key] == nil {
        let entry = Packed(source: constantWeights, bytes: plan.weights.bytes)
        if packedBytes + entry.bytes > packedBudget { (packed, packedBytes) = ([:], 0) }
        (packed[key], packedBytes) = (entry, packedBytes + entry.bytes)
        var plain = plan.weights.plain
        let user = memory(&plain, UnsafeMutableRawPointer(mutating: w), runtime, &scratch)
        execute(reorders.there, [(argumentSource, user), (argumentDestination, memory(&plan.weights.chosen, entry.data, runtime, &scratch))], runtime)
      }
      weights = memory(&plan.weights.chosen, packed[key]!.data, runtime, &scratch)
    } else {
      weights = input(plan.weights, UnsafeMutableRawPointer(mutating: w), runtime, &scratch)
    }
    arguments += [(argumentSource, source), (argumentWeights, weights)]
    if let bias, var descriptor = plan.bias {
      arguments.append((argumentBias, memory(&descriptor, UnsafeMutableRawPointer(mutating: bias), runtime, &scratch)))
    }
    let destination = output(plan.destination, y, seeded: accumulate, channelsLast: destinationChannelsLast, runtime, &scratch)
    arguments.append((argumentDestination, destination.chosen))
    arguments.append((argumentScratchpad, memory(&plan.scratchpad, nil, runtime, &scratch)))
    execute(plan.primitive, arguments, runtime)
    destination.finish()
    dnnl_stream_wait(runtime.stream)
    return true
  }

  /// Whether oneDNN differentiates this convolution (it is on and has kernels for the shape).
  static func canDifferentiate(_ shape: Shape) -> Bool {
    guard enabled, let runtime else { return false }
    lock.lock()
    defer { lock.unlock() }
    return backwardPlan(shape, runtime) != nil
  }

  /// `dx = conv^T(dy, w)` (unless `dx` is nil) and `dw = dy (x) x`, both overwritten; false
  /// (nothing written) when oneDNN is off or has no kernel for this shape. `outputGradientChannelsLast`:
  /// `dy` is in N, H, W, C order; `sourceChannelsLast`: `x` and `dx` are; else N, C, H, W.
  static func convolutionBackward(
    _ shape: Shape, _ x: UnsafePointer<Float>, _ w: UnsafePointer<Float>, _ dy: UnsafePointer<Float>, _ dx: UnsafeMutablePointer<Float>?,
    _ dw: UnsafeMutablePointer<Float>, outputGradientChannelsLast: Bool = false, sourceChannelsLast: Bool = false
  ) -> Bool {
    guard enabled, let runtime else { return false }
    lock.lock()
    defer { lock.unlock() }
    guard let plan = backwardPlan(shape, runtime) else { return false }
    omp_set_num_threads(Int32(Parallel.threads))
    var scratch: [() -> Void] = []
    defer { for release in scratch { release() } }
    let gradient = UnsafeMutableRawPointer(mutating: dy)
    var reordered: dnnl_memory_t?
    if let dx {
      let outputGradient = input(plan.dataOutputGradient, gradient, channelsLast: outputGradientChannelsLast, runtime, &scratch)
      reordered = outputGradient
      let weights = input(plan.dataWeights, UnsafeMutableRawPointer(mutating: w), runtime, &scratch)
      let result = output(plan.dataGradient, dx, seeded: false, channelsLast: sourceChannelsLast, runtime, &scratch)
      execute(
        plan.data,
        [
          (argumentOutputGradient, outputGradient), (argumentWeights, weights), (argumentSourceGradient, result.chosen),
          (argumentScratchpad, memory(&plan.dataScratchpad, nil, runtime, &scratch)),
        ], runtime)
      result.finish()
    }
    // Both primitives often want dY in the same layout: reordered once then.
    let outputGradient =
      plan.sameOutputGradientLayout
      ? reordered ?? input(plan.weightsOutputGradient, gradient, channelsLast: outputGradientChannelsLast, runtime, &scratch)
      : input(plan.weightsOutputGradient, gradient, channelsLast: outputGradientChannelsLast, runtime, &scratch)
    let source = input(plan.weightsSource, UnsafeMutableRawPointer(mutating: x), channelsLast: sourceChannelsLast, runtime, &scratch)
    let result = output(plan.weightsGradient, dw, seeded: false, runtime, &scratch)
    execute(
      plan.weights,
      [
        (argumentOutputGradient, outputGradient), (argumentSource, source), (argumentWeightsGradient, result.chosen),
        (argumentScratchpad, memory(&plan.weightsScratchpad, nil, runtime, &scratch)),
      ], runtime)
    result.finish()
    dnnl_stream_wait(runtime.stream)
    return true
  }

  private static let argumentSource: Int32 = 1, argumentDestination: Int32 = 17, argumentWeights: Int32 = 33, argumentBias: Int32 = 41
  /// Scratch space a primitive asks for: allocated around each call (`dnnl_scratchpad_mode_user`)
  /// rather than kept by every primitive for the life of the process.
  private static let argumentScratchpad: Int32 = 80
  private static let argumentSourceGradient: Int32 = 129, argumentOutputGradient: Int32 = 145, argumentWeightsGradient: Int32 = 161

  /// A memory object over `data` (allocated here when nil); `scratch` receives its release.
  private static func memory(
    _ descriptor: inout dnnl_memory_desc_t, _ data: UnsafeMutableRawPointer?, _ runtime: Runtime, _ scratch: inout [() -> Void]
  ) -> dnnl_memory_t {
    var buffer = data
    if buffer == nil {
      let allocated = UnsafeMutableRawPointer.allocate(byteCount: max(dnnl_memory_desc_get_size(&descriptor), 64), alignment: 64)
      scratch.append { allocated.deallocate() }
      buffer = allocated
    }
    var memory: dnnl_memory_t?
    check(dnnl_memory_create(&memory, &descriptor, runtime.engine, buffer), "memory_create")
    scratch.append { dnnl_memory_destroy(memory) }
    return memory!
  }

  /// The operand in its chosen layout: `data` itself, or a reordered copy. `channelsLast`: `data`
  /// is in N, H, W, C order, else plain.
  private static func input(
    _ operand: Operand, _ data: UnsafeMutableRawPointer, channelsLast: Bool = false, _ runtime: Runtime, _ scratch: inout [() -> Void]
  ) -> dnnl_memory_t {
    var user = operand.user(channelsLast: channelsLast)
    let memory = memory(&user, data, runtime, &scratch)
    guard let reorder = operand.reorders(channelsLast: channelsLast)?.there else { return memory }
    let chosen = self.memory(&operand.chosen, nil, runtime, &scratch)
    execute(reorder, [(argumentSource, memory), (argumentDestination, chosen)], runtime)
    return chosen
  }

  /// Where a primitive writes its result, and `finish` to bring it back to `data` (plain, or
  /// with `channelsLast` in N, H, W, C order) after it ran. `seeded`: the result adds to
  /// `data`'s contents, reordered in first.
  private static func output(
    _ operand: Operand, _ data: UnsafeMutablePointer<Float>, seeded: Bool, channelsLast: Bool = false, _ runtime: Runtime,
    _ scratch: inout [() -> Void]
  ) -> (chosen: dnnl_memory_t, finish: () -> Void) {
    var user = operand.user(channelsLast: channelsLast)
    let memory = memory(&user, UnsafeMutableRawPointer(data), runtime, &scratch)
    guard let (there, back) = operand.reorders(channelsLast: channelsLast) else { return (memory, {}) }
    let chosen = self.memory(&operand.chosen, nil, runtime, &scratch)
    if seeded { execute(there, [(argumentSource, memory), (argumentDestination, chosen)], runtime) }
    return (chosen, { execute(back, [(argumentSource, chosen), (argumentDestination, memory)], runtime) })
  }

  private static func execute(_ primitive: dnnl_primitive_t, _ arguments: [(Int32, dnnl_memory_t)], _ runtime: Runtime) {
    let list = arguments.map { dnnl_exec_arg_t(arg: $0.0, memory: $0.1) }
    check(dnnl_primitive_execute(primitive, runtime.stream, Int32(list.count), list), "primitive_execute")
  }

  private static func check(_ status: dnnl_status_t, _ call: String) {
    guard status == dnnl_success else { fatalError("oneDNN \(call) failed with status \(status.rawValue)") }
  }

  // MARK: Planning

  private static func descriptor(_ dims: [Int], _ tag: dnnl_format_tag_t) -> dnnl_memory_desc_t? {
    var descriptor = dnnl_memory_desc_t()
    let sizes = dims.map { dnnl_dim_t($0) }
    return dnnl_memory_desc_init_by_tag(&descriptor, Int32(sizes.count), sizes, dnnl_f32, tag) == dnnl_success ? descriptor : nil
  }

  private static func reorder(_ from: inout dnnl_memory_desc_t, _ to: inout dnnl_memory_desc_t) -> dnnl_primitive_t? {
    guard let runtime else { return nil }
    var description: dnnl_primitive_desc_t?
    guard dnnl_reorder_primitive_desc_create(&description, &from, runtime.engine, &to, runtime.engine, nil) == dnnl_success else { return nil }
    defer { dnnl_primitive_desc_destroy(description) }
    var primitive: dnnl_primitive_t?
    return dnnl_primitive_create(&primitive, description) == dnnl_success ? primitive : nil
  }

  private static func chosen(_ description: dnnl_primitive_desc_t, _ query: dnnl_query_t) -> dnnl_memory_desc_t {
    dnnl_primitive_desc_query_md(description, query, 0)!.pointee
  }

  /// Plain and "any layout" descriptors of source, weights, destination.
  private static func descriptors(_ shape: Shape) -> (plain: [dnnl_memory_desc_t], any: [dnnl_memory_desc_t])? {
    let dims = [
      [shape.batch, shape.channels] + shape.input, [shape.filters, shape.channels] + shape.kernel, [shape.batch, shape.filters] + shape.output,
    ]
    let tags = [dnnl_nchw, dnnl_oihw, dnnl_nchw]
    let plain = zip(dims, tags).compactMap { descriptor($0, $1) }
    let any = dims.compactMap { descriptor($0, dnnl_format_tag_any) }
    guard plain.count == 3, any.count == 3 else { return nil }
    return (plain, any)
  }

  /// Strides, dilations (oneDNN counts the gaps: ONNX's minus 1), begin and end pads.
  private static func geometry(_ shape: Shape) -> [[dnnl_dim_t]] {
    [shape.strides, shape.dilations.map { $0 - 1 }, Array(shape.pads[0..<2]), Array(shape.pads[2..<4])].map { $0.map { dnnl_dim_t($0) } }
  }

  /// A forward primitive description (`attributes` may be nil), or nil when oneDNN has none.
  private static func forwardDescription(
    _ shape: Shape, kind: dnnl_prop_kind_t, bias: Bool, attributes: dnnl_primitive_attr_t?, _ runtime: Runtime
  ) -> dnnl_primitive_desc_t? {
    guard var (_, any) = descriptors(shape), var biasDescriptor = descriptor([shape.filters], dnnl_x) else { return nil }
    let g = geometry(shape)
    var operation = dnnl_convolution_desc_t()
    let status = withUnsafeMutablePointer(to: &biasDescriptor) { biasPointer in
      dnnl_dilated_convolution_forward_desc_init(
        &operation, kind, dnnl_convolution_direct, &any[0], &any[1], bias ? biasPointer : nil, &any[2], g[0], g[1], g[2], g[3])
    }
    guard status == dnnl_success else { return nil }
    var description: dnnl_primitive_desc_t?
    guard dnnl_primitive_desc_create(&description, &operation, attributes, runtime.engine, nil) == dnnl_success else { return nil }
    return description
  }

  /// The cached plan of a forward convolution (made on first use; the caller holds `lock`).
  private static func forwardPlan(_ shape: Shape, bias: Bool, accumulate: Bool, _ activation: FusedActivation, _ runtime: Runtime)
    -> ForwardPlan?
  {
    let key = PlanKey(shape: shape, bias: bias, accumulate: accumulate, activation: activation)
    if let plan = forwardPlans[key] { return plan }
    let plan = newForwardPlan(shape, bias: bias, accumulate: accumulate, activation, runtime)
    forwardPlans[key] = plan
    return plan
  }

  private static func newForwardPlan(_ shape: Shape, bias: Bool, accumulate: Bool, _ activation: FusedActivation, _ runtime: Runtime)
    -> ForwardPlan?
  {
    guard let (plain, _) = descriptors(shape) else { return nil }
    var attributes: dnnl_primitive_attr_t?, postOps: dnnl_post_ops_t?
    guard dnnl_primitive_attr_create(&attributes) == dnnl_success, dnnl_post_ops_create(&postOps) == dnnl_success else { return nil }
    defer {
      dnnl_post_ops_destroy(postOps)
      dnnl_primitive_attr_destroy(attributes)
    }
    if accumulate { check(dnnl_post_ops_append_sum(postOps, 1), "post_ops_append_sum") }
    switch activation {
    case .none: break
    case .relu: check(dnnl_post_ops_append_eltwise(postOps, 1, dnnl_eltwise_relu, 0, 0), "post_ops_append_eltwise")
    case .leakyRelu(let alpha): check(dnnl_post_ops_append_eltwise(postOps, 1, dnnl_eltwise_relu, alpha, 0), "post_ops_append_eltwise")
    case .clip(let low, let high): check(dnnl_post_ops_append_eltwise(postOps, 1, dnnl_eltwise_clip, low, high), "post_ops_append_eltwise")
    }
    check(dnnl_primitive_attr_set_post_ops(attributes, postOps), "primitive_attr_set_post_ops")
    check(dnnl_primitive_attr_set_scratchpad_mode(attributes, dnnl_scratchpad_mode_user), "primitive_attr_set_scratchpad_mode")
    guard let description = forwardDescription(shape, kind: dnnl_forward_inference, bias: bias, attributes: attributes, runtime) else {
      return nil
    }
    defer { dnnl_primitive_desc_destroy(description) }
    var primitive: dnnl_primitive_t?
    let (sourceDims, outputDims) = ([shape.batch, shape.channels] + shape.input, [shape.batch, shape.filters] + shape.output)
    guard dnnl_primitive_create(&primitive, description) == dnnl_success, let primitive,
      let source = Operand(plain[0], chosen(description, dnnl_query_src_md), activation: sourceDims),
      let weights = Operand(plain[1], chosen(description, dnnl_query_weights_md)),
      let destination = Operand(plain[2], chosen(description, dnnl_query_dst_md), activation: outputDims)
    else { return nil }
    return ForwardPlan(
      primitive: primitive, source: source, weights: weights, destination: destination,
      bias: bias ? descriptor([shape.filters], dnnl_x) : nil, scratchpad: chosen(description, dnnl_query_scratchpad_md))
  }

  /// The cached backward plan of a convolution (made on first use; the caller holds `lock`).
  private static func backwardPlan(_ shape: Shape, _ runtime: Runtime) -> BackwardPlan? {
    if let plan = backwardPlans[shape] { return plan }
    let plan = newBackwardPlan(shape, runtime)
    backwardPlans[shape] = plan
    return plan
  }

  private static func newBackwardPlan(_ shape: Shape, _ runtime: Runtime) -> BackwardPlan? {
    guard var (plain, any) = descriptors(shape),
      let hint = forwardDescription(shape, kind: dnnl_forward_training, bias: false, attributes: nil, runtime)
    else { return nil }
    defer { dnnl_primitive_desc_destroy(hint) }
    let g = geometry(shape)
    var attributes: dnnl_primitive_attr_t?
    guard dnnl_primitive_attr_create(&attributes) == dnnl_success else { return nil }
    defer { dnnl_primitive_attr_destroy(attributes) }
    check(dnnl_primitive_attr_set_scratchpad_mode(attributes, dnnl_scratchpad_mode_user), "primitive_attr_set_scratchpad_mode")
    func create(_ operation: inout dnnl_convolution_desc_t) -> (dnnl_primitive_desc_t, dnnl_primitive_t)? {
      var description: dnnl_primitive_desc_t?, primitive: dnnl_primitive_t?
      guard dnnl_primitive_desc_create(&description, &operation, attributes, runtime.engine, hint) == dnnl_success, let description else {
        return nil
      }
      guard dnnl_primitive_create(&primitive, description) == dnnl_success, let primitive else {
        dnnl_primitive_desc_destroy(description)
        return nil
      }
      return (description, primitive)
    }
    var dataOperation = dnnl_convolution_desc_t(), weightsOperation = dnnl_convolution_desc_t()
    guard
      dnnl_dilated_convolution_backward_data_desc_init(
        &dataOperation, dnnl_convolution_direct, &any[0], &any[1], &any[2], g[0], g[1], g[2], g[3]) == dnnl_success,
      dnnl_dilated_convolution_backward_weights_desc_init(
        &weightsOperation, dnnl_convolution_direct, &any[0], &any[1], nil, &any[2], g[0], g[1], g[2], g[3]) == dnnl_success,
      let (dataDescription, data) = create(&dataOperation)
    else { return nil }
    defer { dnnl_primitive_desc_destroy(dataDescription) }
    guard let (weightsDescription, weights) = create(&weightsOperation) else { return nil }
    defer { dnnl_primitive_desc_destroy(weightsDescription) }
    let (sourceDims, outputDims) = ([shape.batch, shape.channels] + shape.input, [shape.batch, shape.filters] + shape.output)
    guard let dataGradient = Operand(plain[0], chosen(dataDescription, dnnl_query_diff_src_md), activation: sourceDims),
      let dataWeights = Operand(plain[1], chosen(dataDescription, dnnl_query_weights_md)),
      let dataOutputGradient = Operand(plain[2], chosen(dataDescription, dnnl_query_diff_dst_md), activation: outputDims),
      let weightsGradient = Operand(plain[1], chosen(weightsDescription, dnnl_query_diff_weights_md)),
      let weightsSource = Operand(plain[0], chosen(weightsDescription, dnnl_query_src_md), activation: sourceDims),
      let weightsOutputGradient = Operand(plain[2], chosen(weightsDescription, dnnl_query_diff_dst_md), activation: outputDims)
    else { return nil }
    let plan = BackwardPlan(
      data: data, dataGradient: dataGradient, dataWeights: dataWeights, dataOutputGradient: dataOutputGradient, weights: weights,
      weightsGradient: weightsGradient, weightsSource: weightsSource, weightsOutputGradient: weightsOutputGradient)
    plan.dataScratchpad = chosen(dataDescription, dnnl_query_scratchpad_md)
    plan.weightsScratchpad = chosen(weightsDescription, dnnl_query_scratchpad_md)
    return plan
  }
}
