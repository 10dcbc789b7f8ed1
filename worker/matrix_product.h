#ifndef PS_WORKER_MATRIX_PRODUCT_H_
#define PS_WORKER_MATRIX_PRODUCT_H_

#include <Eigen/Core>

#include "common/dataset.h"

// The models' matrix products, out of line in a file of their own so that
// the sanitizer builds can leave Eigen's product kernel, where the models
// spend their time, uninstrumented (worker/CMakeLists.txt says why); the
// models' own code around them stays checked.
namespace ps::worker {

using ConstMatrixRef = Eigen::Ref<const common::RowMatrix>;
using MatrixRef = Eigen::Ref<common::RowMatrix>;

// out = a b
void Product(const ConstMatrixRef& a, const ConstMatrixRef& b, MatrixRef out);
// out = aᵀ b
void TransposedProduct(const ConstMatrixRef& a, const ConstMatrixRef& b,
                       MatrixRef out);
// out = a bᵀ
void ProductTransposed(const ConstMatrixRef& a, const ConstMatrixRef& b,
                       MatrixRef out);

}  // namespace ps::worker

#endif  // PS_WORKER_MATRIX_PRODUCT_H_
