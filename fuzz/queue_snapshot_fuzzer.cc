// Durable queues' snapshots (queue/queue_snapshot.cc): restore arbitrary bytes into a queue; what
// restores must snapshot to bytes that restore to the same snapshot again, and the queue must take
// further commands without failing.
#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>

#include "common/verify.h"
#include "queue/queue_machine.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  using namespace hamq::queue;
  QueueOptions options{
      .max_priority = 3, .dead_letters = true, .message_ttl_ms = 100, .delivery_limit = 2};
  uint64_t held = 0;
  {
    QueueMachine machine(options);
    machine.keep_leaving_messages();
    machine.set_memory_counter(&held);
    if (!machine.restore({reinterpret_cast<const char*>(data), size}).ok()) {
      HAMQ_VERIFY(machine.ready_count() == 0 && held == 0, "a failed restore left state behind");
      return 0;
    }
    // Messages stored in a log stay references (no log here to read them from).
    auto no_log = [](uint64_t) -> MessagePtr { return nullptr; };
    auto first = machine.snapshot(no_log, 1);
    HAMQ_VERIFY(first.ok(), "a restored queue cannot snapshot");
    QueueMachine copy(options);
    HAMQ_VERIFY(copy.restore(*first).ok(), "a snapshot does not restore");
    auto second = copy.snapshot(no_log, 1);
    HAMQ_VERIFY(second.ok() && *second == *first, "snapshots are not stable");
    std::vector<Delivery> deliveries;
    for (HolderId holder : machine.holder_ids()) {
      machine.detach(holder, 50, deliveries);
    }
    machine.attach(HolderId{1}, {.prefetch_count = 2}, 60, deliveries);
    std::vector<MessageId> ids;
    for (const Delivery& delivery : deliveries) ids.push_back(delivery.id);
    machine.requeue(HolderId{1}, ids, 70, deliveries);
    machine.expire(1'000'000, deliveries);
    (void)machine.take_dead_letters();
    std::vector<MessageId> leaving;
    for (const DeadLetter& letter : machine.leaving_messages()) leaving.push_back(letter.id);
    machine.handed_over(leaving);
    HAMQ_VERIFY(machine.leaving_count() == 0, "a message handed over is still leaving");
  }
  HAMQ_VERIFY(held == 0, "a queue gave back other than what it held");
  return 0;
}
