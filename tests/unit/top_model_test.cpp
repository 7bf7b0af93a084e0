// `qbusctl top`'s model (cli/top_model.hpp): rates from counter deltas, vanished and new
// entries, counters that went back, the sort orders and their ties, the tables' text.
#include "top_model.hpp"

#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

#include <algorithm>
#include <string>
#include <vector>

namespace qbusctl::top {
namespace {

using json = nlohmann::json;
using std::chrono::milliseconds;

const Clock::time_point kStart{};

json queue(const std::string& key, std::uint64_t in, std::uint64_t out, std::uint64_t depth = 0,
           std::uint64_t bytes = 0) {
  return {{"key", key},
          {"depth", depth},
          {"bytes", bytes},
          {"enqueued_total", in},
          {"dequeued_total", out},
          {"dropped_total", 0},
          {"waiting_receivers", 1},
          {"subscribers", json::array({json::object(), json::object()})}};
}

json client(std::uint64_t id, const std::string& name, std::uint64_t sent, std::uint64_t received,
            std::uint64_t inbox = 0) {
  return {{"id", id},
          {"pid", 100 + id},
          {"uid", 1000},
          {"comm", "worker"},
          {"name", name},
          {"transport", "unix"},
          {"sent_total", sent},
          {"received_total", received},
          {"inbox_depth", inbox},
          {"unacked", 0}};
}

Sample sample(const json& queues, const json& clients, milliseconds after) {
  return parse_sample(queues, clients, kStart + after);
}

const QueueRow* find_queue(const Model& m, const std::string& key) {
  for (const auto& q : m.queues())
    if (q.counters.key == key) return &q;
  return nullptr;
}

std::vector<std::string> keys(const std::vector<QueueRow>& rows) {
  std::vector<std::string> out;
  for (const auto& r : rows)
    out.push_back(r.counters.key);
  return out;
}

std::vector<std::uint64_t> ids(const std::vector<ClientRow>& rows) {
  std::vector<std::uint64_t> out;
  for (const auto& r : rows)
    out.push_back(r.counters.id);
  return out;
}

TEST(TopModelTest, ParsesTheAdminAnswersAndCountsConsumers) {
  const Sample s = sample(json::array({queue("jobs", 7, 3, 4, 40), "not an object"}),
                          json::array({client(6, "svc", 9, 8, 2)}), milliseconds(0));
  ASSERT_EQ(s.queues.size(), 1u);
  EXPECT_EQ(s.queues[0].key, "jobs");
  EXPECT_EQ(s.queues[0].depth, 4u);
  EXPECT_EQ(s.queues[0].bytes, 40u);
  EXPECT_EQ(s.queues[0].enqueued_total, 7u);
  EXPECT_EQ(s.queues[0].dequeued_total, 3u);
  EXPECT_EQ(s.queues[0].consumers, 3u);  // two subscribers, one waiting receiver
  ASSERT_EQ(s.clients.size(), 1u);
  EXPECT_EQ(s.clients[0].id, 6u);
  EXPECT_EQ(s.clients[0].name, "svc");
  EXPECT_EQ(s.clients[0].sent_total, 9u);
  EXPECT_EQ(s.clients[0].inbox_depth, 2u);
}

TEST(TopModelTest, MissingOrMistypedMembersCountAsZero) {
  const Sample s = sample(json::array({{{"key", "odd"}, {"depth", "three"}, {"bytes", -5}}}),
                          json::object(), milliseconds(0));
  ASSERT_EQ(s.queues.size(), 1u);
  EXPECT_EQ(s.queues[0].depth, 0u);
  EXPECT_EQ(s.queues[0].bytes, 0u);
  EXPECT_EQ(s.queues[0].enqueued_total, 0u);
  EXPECT_TRUE(s.clients.empty());
}

TEST(TopModelTest, TheFirstSampleHasNoRates) {
  Model m;
  m.update(sample(json::array({queue("jobs", 10, 5)}), json::array({client(1, "a", 3, 4)}),
                  milliseconds(0)));
  ASSERT_EQ(m.queues().size(), 1u);
  EXPECT_FALSE(m.queues()[0].in_rate.has_value());
  EXPECT_FALSE(m.queues()[0].out_rate.has_value());
  EXPECT_FALSE(m.clients()[0].sent_rate.has_value());
  EXPECT_EQ(m.in_rate(), 0);
  EXPECT_EQ(format_rate(m.queues()[0].in_rate), "-");
}

TEST(TopModelTest, RatesAreCounterDeltasOverElapsedTime) {
  Model m;
  m.update(sample(json::array({queue("jobs", 10, 5)}), json::array({client(1, "a", 3, 4)}),
                  milliseconds(1000)));
  m.update(sample(json::array({queue("jobs", 60, 30)}), json::array({client(1, "a", 23, 4)}),
                  milliseconds(1500)));
  const QueueRow* q = find_queue(m, "jobs");
  ASSERT_NE(q, nullptr);
  EXPECT_DOUBLE_EQ(*q->in_rate, 100.0);  // 50 in half a second
  EXPECT_DOUBLE_EQ(*q->out_rate, 50.0);
  EXPECT_DOUBLE_EQ(*m.clients()[0].sent_rate, 40.0);
  EXPECT_DOUBLE_EQ(*m.clients()[0].received_rate, 0.0);
  EXPECT_DOUBLE_EQ(m.in_rate(), 100.0);
  EXPECT_DOUBLE_EQ(m.out_rate(), 50.0);
}

TEST(TopModelTest, VanishedEntriesAreDroppedAndNewOnesHaveNoRateYet) {
  Model m;
  m.update(sample(json::array({queue("old", 1, 1), queue("kept", 1, 0)}),
                  json::array({client(1, "gone", 0, 0), client(2, "stays", 0, 0)}),
                  milliseconds(0)));
  m.update(sample(json::array({queue("kept", 3, 0), queue("new", 9, 0)}),
                  json::array({client(2, "stays", 2, 0), client(3, "fresh", 5, 0)}),
                  milliseconds(1000)));
  EXPECT_EQ(find_queue(m, "old"), nullptr);
  ASSERT_NE(find_queue(m, "kept"), nullptr);
  EXPECT_DOUBLE_EQ(*find_queue(m, "kept")->in_rate, 2.0);
  ASSERT_NE(find_queue(m, "new"), nullptr);
  EXPECT_FALSE(find_queue(m, "new")->in_rate.has_value());
  ASSERT_EQ(m.clients().size(), 2u);
  EXPECT_EQ(m.clients()[0].counters.id, 2u);
  EXPECT_DOUBLE_EQ(*m.clients()[0].sent_rate, 2.0);
  EXPECT_EQ(m.clients()[1].counters.id, 3u);
  EXPECT_FALSE(m.clients()[1].sent_rate.has_value());

  // A queue that vanished and came back is new again: no rate against the older sample.
  m.update(sample(json::array({queue("old", 500, 0)}), json::array(), milliseconds(2000)));
  EXPECT_FALSE(find_queue(m, "old")->in_rate.has_value());
  EXPECT_TRUE(m.clients().empty());
}

TEST(TopModelTest, ACounterThatWentBackGivesRateZero) {
  Model m;
  m.update(sample(json::array({queue("jobs", 1000, 900)}), json::array({client(1, "a", 50, 50)}),
                  milliseconds(0)));
  // qbusd restarted (or the queue was recreated): the totals start again from little.
  m.update(sample(json::array({queue("jobs", 3, 950)}), json::array({client(1, "a", 2, 60)}),
                  milliseconds(1000)));
  const QueueRow* q = find_queue(m, "jobs");
  EXPECT_DOUBLE_EQ(*q->in_rate, 0.0);
  EXPECT_DOUBLE_EQ(*q->out_rate, 50.0);
  EXPECT_DOUBLE_EQ(*m.clients()[0].sent_rate, 0.0);
  EXPECT_DOUBLE_EQ(*m.clients()[0].received_rate, 10.0);
  // From there on the new totals are the base.
  m.update(sample(json::array({queue("jobs", 13, 950)}), json::array(), milliseconds(2000)));
  EXPECT_DOUBLE_EQ(*find_queue(m, "jobs")->in_rate, 10.0);
}

TEST(TopModelTest, NoElapsedTimeGivesRateZero) {
  EXPECT_EQ(rate_of(1, 100, 0), 0);
  EXPECT_EQ(rate_of(1, 100, -1), 0);
  EXPECT_EQ(rate_of(100, 1, 1), 0);
  EXPECT_DOUBLE_EQ(rate_of(0, 30, 2), 15.0);
}

// Rows with the given rates (in only), depths and bytes, through the model.
std::vector<QueueRow> rows_for_sorting() {
  Model m;
  m.update(sample(json::array({queue("a", 0, 0, 5, 10), queue("b", 0, 0, 50, 1),
                               queue("c", 0, 0, 5, 900), queue("d", 0, 0, 0, 0)}),
                  json::array(), milliseconds(0)));
  m.update(sample(json::array({queue("a", 10, 0, 5, 10), queue("b", 1, 0, 50, 1),
                               queue("c", 10, 0, 5, 900), queue("d", 100, 0, 0, 0)}),
                  json::array(), milliseconds(1000)));
  return m.queues();
}

TEST(TopModelTest, QueuesSortByRateBusiestFirstTiesByKey) {
  auto rows = rows_for_sorting();
  sort_queues(rows, SortKey::rate);
  EXPECT_EQ(keys(rows), (std::vector<std::string>{"d", "a", "c", "b"}));
}

TEST(TopModelTest, QueuesSortByDepthDeepestFirstTiesByKey) {
  auto rows = rows_for_sorting();
  sort_queues(rows, SortKey::depth);
  EXPECT_EQ(keys(rows), (std::vector<std::string>{"b", "a", "c", "d"}));
}

TEST(TopModelTest, QueuesSortByBytesLargestFirst) {
  auto rows = rows_for_sorting();
  sort_queues(rows, SortKey::bytes);
  EXPECT_EQ(keys(rows), (std::vector<std::string>{"c", "a", "b", "d"}));
}

TEST(TopModelTest, QueuesSortByKeyAscending) {
  auto rows = rows_for_sorting();
  std::reverse(rows.begin(), rows.end());
  sort_queues(rows, SortKey::key);
  EXPECT_EQ(keys(rows), (std::vector<std::string>{"a", "b", "c", "d"}));
}

TEST(TopModelTest, UnknownRatesSortAsZeroAndTiesStayInKeyOrder) {
  Model m;
  m.update(sample(json::array({queue("z", 5, 5), queue("m", 0, 0), queue("a", 9, 9)}),
                  json::array(), milliseconds(0)));
  auto rows = m.queues();
  sort_queues(rows, SortKey::rate);
  EXPECT_EQ(keys(rows), (std::vector<std::string>{"a", "m", "z"}));
}

TEST(TopModelTest, ClientsSortByRateDepthAndNameTiesByNameThenId) {
  Model m;
  m.update(sample(json::array(),
                  json::array({client(4, "x", 0, 0, 1), client(2, "x", 0, 0, 1),
                               client(3, "b", 0, 0, 9), client(1, "c", 0, 0, 0)}),
                  milliseconds(0)));
  m.update(sample(json::array(),
                  json::array({client(4, "x", 0, 0, 1), client(2, "x", 0, 0, 1),
                               client(3, "b", 1, 0, 9), client(1, "c", 10, 10, 0)}),
                  milliseconds(1000)));
  auto rows = m.clients();
  sort_clients(rows, SortKey::rate);
  EXPECT_EQ(ids(rows), (std::vector<std::uint64_t>{1, 3, 2, 4}));
  sort_clients(rows, SortKey::bytes);  // clients have no bytes: by rate
  EXPECT_EQ(ids(rows), (std::vector<std::uint64_t>{1, 3, 2, 4}));
  sort_clients(rows, SortKey::depth);
  EXPECT_EQ(ids(rows), (std::vector<std::uint64_t>{3, 2, 4, 1}));
  sort_clients(rows, SortKey::key);
  EXPECT_EQ(ids(rows), (std::vector<std::uint64_t>{3, 1, 2, 4}));
}

TEST(TopModelTest, SortNamesRoundTrip) {
  for (SortKey k : {SortKey::rate, SortKey::depth, SortKey::bytes, SortKey::key}) {
    EXPECT_EQ(parse_sort(sort_name(k)), k);
  }
  EXPECT_EQ(parse_sort("name"), SortKey::key);
  EXPECT_EQ(parse_sort("speed"), std::nullopt);
}

TEST(TopModelTest, TablesAreAlignedMarkTheSortColumnAndEscapeNames) {
  Model m;
  m.update(sample(json::array({queue("jobs", 0, 0, 3, 2048), queue("a\x1b[2Jb", 0, 0)}),
                  json::array({client(7, "svc", 0, 0)}), milliseconds(0)));
  m.update(sample(json::array({queue("jobs", 25, 0, 3, 2048), queue("a\x1b[2Jb", 0, 0)}),
                  json::array({client(7, "svc", 4, 0)}), milliseconds(2000)));
  auto queues = m.queues();
  sort_queues(queues, SortKey::depth);
  const auto lines = queue_table(queues, SortKey::depth);
  ASSERT_EQ(lines.size(), 3u);
  EXPECT_EQ(lines[0], "KEY     DEPTH*    BYTES  IN/S  OUT/S  CONSUMERS  DROPPED");
  EXPECT_EQ(lines[1], "jobs         3  2.0 KiB  12.5    0.0          3        0");
  EXPECT_EQ(lines[2], "a?[2Jb       0      0 B   0.0    0.0          3        0");
  EXPECT_NE(queue_table(queues, SortKey::rate)[0].find("IN/S*  OUT/S*"), std::string::npos);

  const auto clients = client_table(m.clients(), SortKey::key);
  ASSERT_EQ(clients.size(), 2u);
  EXPECT_EQ(clients[0], "ID  PID   UID  COMM    NAME*  TRANSPORT  SENT/S  RECV/S  INBOX  UNACKED");
  EXPECT_EQ(clients[1], " 7  107  1000  worker  svc    unix          2.0     0.0      0        0");
}

TEST(TopModelTest, RatesAndBytesAreShortForNarrowColumns) {
  EXPECT_EQ(format_rate(0.0), "0.0");
  EXPECT_EQ(format_rate(999.94), "999.9");
  EXPECT_EQ(format_rate(12'340.0), "12.3k");
  EXPECT_EQ(format_rate(5'600'000.0), "5.6M");
  EXPECT_EQ(format_bytes(0), "0 B");
  EXPECT_EQ(format_bytes(1536), "1.5 KiB");
}

TEST(TopModelTest, BothTablesGetAllTheirRowsWhenTheyFit) {
  const RowSplit s = split_rows(20, 5, 7, false);
  EXPECT_EQ(s.queues, 5u);
  EXPECT_EQ(s.clients, 7u);
}

TEST(TopModelTest, TheFavouredTableGetsTwoThirdsOrWhatTheOtherLeaves) {
  RowSplit s = split_rows(30, 100, 100, false);
  EXPECT_EQ(s.queues, 20u);
  EXPECT_EQ(s.clients, 10u);
  s = split_rows(30, 100, 100, true);
  EXPECT_EQ(s.queues, 10u);
  EXPECT_EQ(s.clients, 20u);
  s = split_rows(30, 100, 4, false);  // the clients need only 4
  EXPECT_EQ(s.queues, 26u);
  EXPECT_EQ(s.clients, 4u);
  s = split_rows(30, 4, 100, false);  // the queues need only 4: the clients get the rest
  EXPECT_EQ(s.queues, 4u);
  EXPECT_EQ(s.clients, 26u);
  s = split_rows(0, 3, 3, false);
  EXPECT_EQ(s.queues + s.clients, 0u);
}

}  // namespace
}  // namespace qbusctl::top
