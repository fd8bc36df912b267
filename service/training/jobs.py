"""Training's job kinds (see ``service.core.jobs``)."""
from service.core.jobs import JobKind
from service.models import TrainingJob

TRAINING = JobKind("training.run", "gpu", model=TrainingJob, label="training job")
