from inferd.observability.metrics import Metrics


def test_each_app_has_its_own_registry():
    a, b = Metrics(), Metrics()
    a.batch_done("m", 8, 100, 0.01)
    a.queue_depth("m", 3)
    text_a, text_b = a.render().decode(), b.render().decode()
    assert 'inferd_batch_size_count{model="m"} 1.0' in text_a
    assert 'inferd_queue_depth{model="m"} 3.0' in text_a
    assert 'inferd_batch_size_count{model="m"}' not in text_b
