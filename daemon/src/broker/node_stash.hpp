// Reuse of the nodes of node-based standard containers (map, multimap, set, unordered_map):
// the broker's per-message bookkeeping (a waiting receive, its deadline, a pending request)
// is inserted and erased at message rate, and recycling the extracted node makes that cost
// no allocation once the stash has warmed up (std::list nodes are recycled by splicing
// instead; see Queues::add_waiter). Not thread-safe.
#pragma once

#include <cstddef>
#include <utility>
#include <vector>

namespace qbus::broker {

// Holds up to `Max` extracted nodes of `Container`; beyond that a node is freed as usual,
// so a burst does not leave memory behind for ever.
template <typename Container, std::size_t Max>
class NodeStash {
 public:
  using Node = typename Container::node_type;

  // Room for every node up front: keep() runs on erase paths, which must not throw.
  NodeStash() { nodes_.reserve(Max); }

  // Erases the element at `it`, keeping its node.
  void erase(Container& c, typename Container::const_iterator it) { keep(c.extract(it)); }
  void keep(Node&& node) {
    if (node && nodes_.size() < Max) nodes_.push_back(std::move(node));
  }
  // A node from the stash, or an empty one; its old value is still in it, to be
  // overwritten by the caller.
  Node take() {
    if (nodes_.empty()) return {};
    Node n = std::move(nodes_.back());
    nodes_.pop_back();
    return n;
  }

  // Inserts key -> value into a map (ordered or not, unique or multi), reusing a node
  // when one is kept. Returns the element's iterator (for a unique map, the element that
  // was already there when the key was taken).
  template <typename K, typename V>
  typename Container::iterator insert_mapped(Container& c, K&& key, V&& value) {
    Node n = take();
    if (!n) return position(c.emplace(std::forward<K>(key), std::forward<V>(value)));
    n.key() = std::forward<K>(key);
    n.mapped() = std::forward<V>(value);
    return position(c.insert(std::move(n)));
  }

  // Inserts `value` into a set, reusing a node when one is kept.
  template <typename T>
  typename Container::iterator insert_value(Container& c, T&& value) {
    Node n = take();
    if (!n) return position(c.insert(std::forward<T>(value)));
    n.value() = std::forward<T>(value);
    return position(c.insert(std::move(n)));
  }

  std::size_t size() const { return nodes_.size(); }

 private:
  template <typename R>
  static typename Container::iterator position(R&& r) {
    if constexpr (requires { r.position; }) {
      return r.position;  // insert_return_type
    } else if constexpr (requires { r.first; }) {
      return r.first;  // pair<iterator, bool>
    } else {
      return r;
    }
  }

  std::vector<Node> nodes_;
};

}  // namespace qbus::broker
