/// Element-wise sums across the processes of a data-parallel run, for operators whose training
/// behaviour couples the samples of a batch (synchronized BatchNormalization).
///
/// Every process must make the same calls, with arrays of the same length, in the same order;
/// `sum` returns with `values` replaced by the element-wise sum over all processes (the same
/// result, bit for bit, on every process).
public protocol Collective: AnyObject {
  func sum(_ values: inout [Double]) throws
}
